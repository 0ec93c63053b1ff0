"""Kafka clients against seglog serve --kafka: produce and consume throughput
and latency with acks=all, through confluent-kafka (librdkafka). Prints
figures; asserts nothing but that every record came back.

    cargo build --release
    python3 benches/kafka.py                      # starts target/release/seglog itself
    python3 benches/kafka.py --records 1000000    # longer
    python3 benches/kafka.py --bootstrap HOST:PORT   # another broker (Kafka, Redpanda, ...)
    python3 benches/kafka.py --bootstrap HOST:PORT --tls-bootstrap HOST:PORT --ca CA.pem

Measured:
- produce: RECORDS records of VALUE_BYTES bytes to one 3-partition topic as fast as
  the producer takes them (linger.ms=5, up to 5 requests in flight per
  connection, librdkafka's defaults otherwise); records/s, MB/s of values, and
  the latency from produce() to the delivery report (p50, p99, max);
- paced produce: one record at a time, each waited for (flush) before the
  next, for PACED records: the latency of one durable acks=all write;
- consume: every record of the topic from offset 0 with assign() (fetch
  long polls, default fetch sizes); records/s and MB/s.
- produce over TLS: the produce phase again, against a second seglog
  started with --tls-cert/--tls-key (a self-signed certificate made with
  the openssl command), through security.protocol=SSL; the plaintext and
  TLS phases alternate ROUNDS times on fresh topics, and the best of each
  is compared (the goal: TLS costs at most 25% of produce throughput).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def start_seglog(binary, extra=()):
    data = tempfile.mkdtemp(prefix="seglog-kafka-bench-")
    port = free_port()
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--kafka", "127.0.0.1:%d" % port,
         "--data-dir", os.path.join(data, "store"), *extra],
        stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, data, "127.0.0.1:%d" % port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("seglog did not start; see " + log.name)


def self_signed(directory):
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        raise SystemExit("the TLS phase needs the openssl command: apt-get install -y openssl")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def produce_phase(bootstrap, security, records, value_bytes):
    """Produces RECORDS records to a new 3-partition topic as fast as the
    producer takes them; returns the topic, the producer, records/s, MB/s
    and the sorted latencies."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "bench-%d" % time.time_ns()
    admin = AdminClient({"bootstrap.servers": bootstrap, **security})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    value = b"x" * value_bytes
    latencies = []
    failures = []

    def on_delivery(err, msg, sent):
        if err is not None:
            failures.append(err)
        else:
            latencies.append(time.perf_counter() - sent)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000, **security})
    # One record first, so that the connection and the topic's metadata
    # are there before the clock starts.
    producer.produce(topic, value=value)
    producer.flush(30)
    start = time.perf_counter()
    for i in range(records):
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(topic, value=value, key=b"%d" % (i % 1000),
                                 on_delivery=lambda e, m, s=sent: on_delivery(e, m, s))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    took = time.perf_counter() - start
    if failures or len(latencies) != records:
        raise SystemExit("produce failed: %d delivered, errors %r" % (len(latencies), failures[:3]))
    latencies.sort()
    return topic, producer, records / took, records * value_bytes / took / 1e6, latencies, took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap")
    parser.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "seglog"))
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--paced", type=int, default=2_000)
    parser.add_argument("--tls-bootstrap", help="the same broker's TLS listener (with --bootstrap)")
    parser.add_argument("--ca", help="the CA certificate of --tls-bootstrap")
    parser.add_argument("--rounds", type=int, default=2,
                        help="plaintext and TLS produce phases, alternated")
    args = parser.parse_args()

    import confluent_kafka
    from confluent_kafka import Consumer, TopicPartition

    server = data = tls_server = tls_data = None
    bootstrap = args.bootstrap
    tls_bootstrap, ca = args.tls_bootstrap, args.ca
    if bootstrap is None:
        server, data, bootstrap = start_seglog(args.binary)
        cert, key = self_signed(data)
        tls_server, tls_data, tls_bootstrap = start_seglog(
            args.binary, ["--tls-cert", cert, "--tls-key", key])
        ca = cert
    try:
        print("confluent-kafka %s, librdkafka %s, broker %s (%s)" % (
            confluent_kafka.__version__, confluent_kafka.libversion()[0], bootstrap,
            "seglog " + os.path.abspath(args.binary) if server else "given"))
        plain_rounds = []
        topic, producer, rate, mbps, latencies, took = produce_phase(
            bootstrap, {}, args.records, args.value_bytes)
        plain_rounds.append(rate)
        value = b"x" * args.value_bytes
        print("produce acks=all: %d records of %d B in %.2f s: %.0f records/s, %.1f MB/s; "
              "latency p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
                  args.records, args.value_bytes, took, rate, mbps,
                  percentile(latencies, 0.50) * 1e3, percentile(latencies, 0.99) * 1e3,
                  latencies[-1] * 1e3))

        paced = []
        for i in range(args.paced):
            sent = time.perf_counter()
            producer.produce(topic, value=value, partition=i % 3)
            producer.flush(30)
            paced.append(time.perf_counter() - sent)
        paced.sort()
        del producer  # closes its connections before the server stops
        print("paced produce acks=all, one record at a time: %d records, latency p50 %.2f ms, "
              "p99 %.2f ms, max %.2f ms" % (args.paced, percentile(paced, 0.5) * 1e3,
                                            percentile(paced, 0.99) * 1e3, paced[-1] * 1e3))

        total = args.records + args.paced + 1
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        got = 0
        start = time.perf_counter()
        deadline = time.time() + 300
        while got < total and time.time() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                if msg.error() is None:
                    got += 1
        took = time.perf_counter() - start
        consumer.close()
        if got != total:
            raise SystemExit("consumed %d of %d" % (got, total))
        print("consume: %d records in %.2f s: %.0f records/s, %.1f MB/s" % (
            got, took, got / took, got * args.value_bytes / took / 1e6))

        if tls_bootstrap is None:
            return
        tls = {"security.protocol": "SSL", "ssl.ca.location": ca}
        tls_rounds = []
        for round_ in range(args.rounds):
            if round_ > 0:
                _, producer, rate, _, _, _ = produce_phase(
                    bootstrap, {}, args.records, args.value_bytes)
                del producer
                plain_rounds.append(rate)
            _, producer, rate, mbps, latencies, took = produce_phase(
                tls_bootstrap, tls, args.records, args.value_bytes)
            del producer
            tls_rounds.append(rate)
            print("produce acks=all over TLS: %d records in %.2f s: %.0f records/s, %.1f MB/s; "
                  "latency p50 %.1f ms, p99 %.1f ms" % (
                      args.records, took, rate, mbps, percentile(latencies, 0.50) * 1e3,
                      percentile(latencies, 0.99) * 1e3))
        plain, secure = max(plain_rounds), max(tls_rounds)
        print("produce throughput, best of %d rounds each: plaintext %.0f records/s, TLS %.0f "
              "records/s: TLS/plaintext %.2f (goal: at least 0.75, TLS costing at most 25%%): %s" % (
                  args.rounds, plain, secure, secure / plain,
                  "met" if secure >= 0.75 * plain else "MISSED"))
    finally:
        for process, directory in ((server, data), (tls_server, tls_data)):
            if process is not None:
                process.terminate()
                process.wait(30)
                shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

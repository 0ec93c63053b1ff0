"""Real Kafka clients against a running `seglog serve --kafka`.

Run by tests/serve/kafka.rs as `python3 clients.py SCENARIO BOOTSTRAP TOPIC`; prints
one line `ok ...` and exits 0, or raises (exit 1) naming what was wrong.

Scenarios:
- confluent-groups / kafka-python-groups: a producer with acks=all sends
  records with keys, headers and timestamps to a 3-partition topic; a
  consumer with subscribe() in a group reads part of them and commits;
  a second consumer of the same group starts from the committed offsets
  and reads the rest. Every record comes back exactly once, in order per
  partition, with key, value, headers and timestamp intact. Then (confluent)
  offsets by timestamp, watermarks, and the topic's deletion.
- confluent-rebalance: two consumers of one group; the second joins while
  the first reads, the partitions are split between them, the first leaves
  and the second takes them all; every record is read, and read twice only
  when its commit was refused because a rebalance had begun.
- confluent-too-large: against a server with --max-record-bytes 1000, one
  batch of five small records and one of 2,000 bytes is refused whole
  (MSG_SIZE_TOO_LARGE for all six, nothing appended); a small record after
  it is taken at offset 0.
- confluent-acked FILE COUNT: produces COUNT records one by one with
  acks=all, appending each acknowledged (partition, offset, value) to FILE
  as it is acknowledged, until killed or done (the kill -9 test).
- confluent-read-all COUNT_FILE: reads the topic from the start and checks
  every line of the file is there.
- confluent-seek-commit: ten records in one partition; a consumer of a
  group commits offset 8 with a metadata string, then seeks back and
  commits offset 3 with another; the group's committed offset is 3 with the
  second string, and a new consumer of the group starts at offset 3.
- confluent-committed-check: (after a restart of the server) the group of
  confluent-seek-commit still has offset 3 and its metadata string.
- kafka-python-seek-commit: the same commits through kafka-python.
- confluent-idempotent COUNT / kafka-python-idempotent COUNT: an idempotent
  producer (confluent-kafka with enable.idempotence=true; kafka-python 3
  with its defaults, which turn idempotence on) sends COUNT records, keyed,
  to the topic (tests/serve/idempotence.rs runs it through a proxy that
  drops produce replies, so batches are retried); every record must be
  acknowledged. Then the topic is read back from the start and the line
  says how many records were found twice (duplicates), never (losses), and
  out of their order of production within a key (reordered).
- confluent-pipelined COUNT: an idempotent confluent-kafka producer sends
  COUNT records of one key, one record a batch, five requests in flight,
  straight to the server; every record must be acknowledged, and the line
  counts as above (tests/serve/idempotence.rs also checks that the server
  refused no batch as out of order and handed out one producer id).
- confluent-admin: confluent-kafka's AdminClient through every admin API:
  DescribeConfigs, IncrementalAlterConfigs and AlterConfigs (a retention
  set and reset; a read-only config and a bad value refused with
  INVALID_CONFIG, changing nothing), CreatePartitions (and a lower count
  refused), DeleteRecords (the log start moves, a consumer starts there),
  ListOffsets by max timestamp, ListGroups, DescribeGroups, DeleteGroups
  (refused while the group has a member), OffsetDelete through
  kafka-python (refused while subscribed), DescribeCluster (kafka-python's;
  librdkafka's describe_cluster reads Metadata).
- confluent-secure CONFIG / kafka-python-secure CONFIG: CONFIG is a JSON
  object of the client's security settings (TLS, SASL mechanism, user and
  password); a producer with acks=all sends 20 records, a consumer in a
  group reads them all back, in order, with their values.
- confluent-denied CONFIG / kafka-python-denied CONFIG: the same settings
  with a wrong password: the client reports an authentication failure
  (SASL_AUTHENTICATION_FAILED's message) and nothing is acknowledged.
- confluent-forbidden CONFIG: a user whose write prefixes do not cover the
  topic produces to it: every record is refused with
  TOPIC_AUTHORIZATION_FAILED.
"""

import json
import sys
import time

RECORDS = 300
PARTITIONS = 3
FIRST_PART = 120
DEADLINE_S = 60


def make_records(topic, null_headers):
    base_ts = 1_700_000_000_000
    out = []
    for i in range(RECORDS):
        key = ("key-%d" % (i % 7)).encode()
        value = bytes([i % 256, 0, 255]) + ("value %d" % i).encode()
        headers = [("n", str(i).encode()), ("bin", b"\x00\x01\xff")]
        if i % 5 == 0:
            headers.append(("n", b"dup"))  # a repeated name, kept as sent
        if null_headers and i % 7 == 0:
            headers.append(("null", None))  # kafka-python cannot send one
        out.append((key, value, headers, base_ts + i))
    return out


def check(consumed, produced, acked_offsets):
    """consumed: list of (partition, offset, key, value, headers, ts)."""
    by_value = {r[1]: r for r in produced}
    seen = {}
    last_offset = {}
    for partition, offset, key, value, headers, ts in consumed:
        if value in seen:
            raise AssertionError("record %r consumed twice" % value)
        seen[value] = True
        if partition in last_offset and offset <= last_offset[partition]:
            raise AssertionError("partition %d went from %d to %d" % (partition, last_offset[partition], offset))
        last_offset[partition] = offset
        want = by_value.get(value)
        if want is None:
            raise AssertionError("unknown record %r" % value)
        wkey, _, wheaders, wts = want
        if key != wkey or ts != wts:
            raise AssertionError("record %r: key %r ts %r, want %r %r" % (value, key, ts, wkey, wts))
        # Headers in order, a repeated name repeated.
        got_headers = [(name, hv) for name, hv in headers]
        if got_headers != list(wheaders):
            raise AssertionError("record %r: headers %r, want %r" % (value, got_headers, wheaders))
        if acked_offsets.get(value) != (partition, offset):
            raise AssertionError("record %r at %r, acknowledged at %r" % (value, (partition, offset), acked_offsets.get(value)))
    missing = [v for v in by_value if v not in seen]
    if missing:
        raise AssertionError("%d records never consumed, first %r" % (len(missing), missing[0]))


def confluent_groups(bootstrap, topic):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(10)
    produced = make_records(topic, null_headers=True)
    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for key, value, headers, ts in produced:
        producer.produce(topic, value=value, key=key, headers=headers, timestamp=ts, on_delivery=on_delivery)
    if producer.flush(30) != 0 or errors:
        raise AssertionError("produce failed: %r" % errors[:3])

    group = "g-" + topic
    consumed = []

    def consume(limit):
        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        consumer.subscribe([topic])
        got = 0
        deadline = time.time() + DEADLINE_S
        while got < limit and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise AssertionError("consumer error: %s" % msg.error())
            consumed.append((msg.partition(), msg.offset(), msg.key(), msg.value(),
                             msg.headers() or [], msg.timestamp()[1]))
            got += 1
            consumer.commit(message=msg, asynchronous=False)
        consumer.close()
        return got

    first = consume(FIRST_PART)
    rest = consume(RECORDS - first)
    check(consumed, produced, acked)

    # ListOffsets by timestamp: the first record of each partition at or
    # after a time, and none past the last.
    from confluent_kafka import TopicPartition
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    at = produced[150][3]
    found = probe.offsets_for_times([TopicPartition(topic, p, at) for p in range(PARTITIONS)], timeout=10)
    for tp in found:
        want = min((o for (p, o), ts in ((acked[r[1]], r[3]) for r in produced) if p == tp.partition and ts >= at),
                   default=None)
        if tp.error is not None or tp.offset != want:
            raise AssertionError("offsets_for_times partition %d: %r, want %r" % (tp.partition, tp.offset, want))
    after = probe.offsets_for_times([TopicPartition(topic, 0, produced[-1][3] + 1)], timeout=10)
    if after[0].offset != -1:
        raise AssertionError("offsets_for_times past the end: %r" % after[0].offset)
    low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    if low != 0 or high != sum(1 for (p, _) in acked.values() if p == 0):
        raise AssertionError("watermarks of partition 0: %r" % ((low, high),))
    probe.close()

    # DeleteTopics: the topic is gone from the metadata.
    admin.delete_topics([topic])[topic].result(10)
    if topic in admin.list_topics(timeout=10).topics:
        raise AssertionError("topic still listed after its deletion")
    print("ok confluent-kafka %s (librdkafka %s): %d records, %d then %d after a restart of the consumer"
          % (__import__("confluent_kafka").__version__, __import__("confluent_kafka").libversion()[0],
             len(consumed), first, rest))


def kafka_python_groups(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.structs import OffsetAndMetadata

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    produced = make_records(topic, null_headers=False)
    acked = {}
    # kafka-python 3's defaults: idempotence on.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = []
    for key, value, headers, ts in produced:
        futures.append((value, producer.send(topic, value=value, key=key, headers=headers, timestamp_ms=ts)))
    for value, future in futures:
        meta = future.get(timeout=30)
        acked[value] = (meta.partition, meta.offset)
    producer.close()

    group = "g-" + topic
    consumed = []

    def consume(limit):
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        consumer.subscribe([topic])
        got = 0
        deadline = time.time() + DEADLINE_S
        while got < limit and time.time() < deadline:
            batches = consumer.poll(timeout_ms=500, max_records=1)
            for tp, msgs in batches.items():
                for msg in msgs:
                    consumed.append((msg.partition, msg.offset, msg.key, msg.value,
                                     list(msg.headers or []), msg.timestamp))
                    got += 1
                    consumer.commit({TopicPartition(topic, msg.partition): OffsetAndMetadata(msg.offset + 1, None, -1)})
        consumer.close()
        return got

    first = consume(FIRST_PART)
    rest = consume(RECORDS - first)
    check(consumed, produced, acked)
    print("ok kafka-python %s: %d records, %d then %d after a restart of the consumer"
          % (__import__("kafka").__version__, len(consumed), first, rest))


def confluent_rebalance(bootstrap, topic):
    import threading
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    partitions = 4
    uncommitted = set()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(400):
        producer.produce(topic, value=b"%d" % i, partition=i % partitions)
    if producer.flush(30) != 0:
        raise AssertionError("produce failed")
    got = {}
    lock = threading.Lock()
    assignments = {"a": [], "b": []}
    b_assigned = threading.Event()
    a_left = threading.Event()
    deadline = time.time() + DEADLINE_S

    def consumer(name):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rebalance-" + topic,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "heartbeat.interval.ms": 300})

        def on_assign(_, ps):
            assignments[name].append(sorted(p.partition for p in ps))
            if name == "b" and ps:
                b_assigned.set()

        c.subscribe([topic], on_assign=on_assign)
        return c

    def poll_one(c, name):
        m = c.poll(0.2)
        if m is None:
            return
        if m.error():
            raise AssertionError("consumer %s: %s" % (name, m.error()))
        with lock:
            got.setdefault(m.value(), []).append(name)
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException as e:
            # A commit during a rebalance is refused, as Kafka refuses it;
            # the record may then be read again by its next owner.
            if e.args[0].code() != KafkaError.REBALANCE_IN_PROGRESS:
                raise
            uncommitted.add(m.value())

    a = consumer("a")
    while len(got) < 50 and time.time() < deadline:
        poll_one(a, "a")

    def run_b():
        b = consumer("b")
        # On until every record is read and, a gone, b holds every partition.
        while time.time() < deadline and (
                len(got) < 400 or not a_left.is_set()
                or assignments["b"][-1:] != [list(range(partitions))]):
            poll_one(b, "b")
        b.close()

    thread = threading.Thread(target=run_b)
    thread.start()
    # a reads on until b has partitions of its own, then leaves.
    while not b_assigned.is_set() and time.time() < deadline:
        poll_one(a, "a")
    a.close()
    a_left.set()
    thread.join()
    twice = [v for v, names in got.items() if len(names) > 1 and v not in uncommitted]
    if twice or len(got) != 400:
        raise AssertionError("%d records read, %d twice (%r)" % (len(got), len(twice), twice[:3]))
    if not b_assigned.is_set():
        raise AssertionError("b never got partitions: %r" % assignments)
    split = [x for x in assignments["b"] if x and len(x) < partitions]
    if not split or assignments["b"][-1] != list(range(partitions)):
        raise AssertionError("assignments did not split and move: %r" % assignments)
    print("ok confluent-kafka rebalance: assignments %r, 400 records, %d read again after a commit refused by the rebalance"
          % (assignments, sum(len(n) - 1 for n in got.values())))


def confluent_too_large(bootstrap, topic):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(10)
    results = []
    # The six records must go as one batch: a linger far above any stall of
    # this loop on a loaded machine (200 ms once let the first go alone).
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 3000,
                         "retries": 0})
    for value in [b"small"] * 5 + [b"x" * 2000]:
        producer.produce(topic, value=value, on_delivery=lambda e, m: results.append((e, m.offset())))
    producer.flush(30)
    codes = [e.code() if e else None for e, _ in results]
    if codes != [KafkaError.MSG_SIZE_TOO_LARGE] * 6:
        raise AssertionError("the batch's deliveries: %r" % codes)
    results.clear()
    producer.produce(topic, value=b"after", on_delivery=lambda e, m: results.append((e, m.offset())))
    producer.flush(30)
    if results != [(None, 0)]:
        raise AssertionError("the record after the refused batch: %r" % results)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()
    if (low, high) != (0, 1):
        raise AssertionError("watermarks %r" % ((low, high),))
    print("ok a batch with an oversized record refused whole")


def confluent_acked(bootstrap, topic, path, count):
    from confluent_kafka import Producer
    out = open(path, "a")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "message.timeout.ms": 5000})

    def on_delivery(err, msg):
        if err is None:
            out.write(json.dumps([msg.partition(), msg.offset(), msg.value().decode()]) + "\n")
            out.flush()

    for i in range(count):
        producer.produce(topic, value=("r%d" % i).encode(), on_delivery=on_delivery)
        producer.poll(0)
    producer.flush(10)
    print("ok produced")


def confluent_read_all(bootstrap, topic, path):
    from confluent_kafka import Consumer, TopicPartition
    acked = [json.loads(line) for line in open(path) if line.strip()]
    want = {(p, o): v for p, o, v in acked}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    partitions = {p for p, _, _ in acked} or {0}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    got = {}
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and not all(k in got for k in want):
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got[(msg.partition(), msg.offset())] = msg.value().decode()
    consumer.close()
    lost = [(k, v) for k, v in want.items() if got.get(k) != v]
    if lost:
        raise AssertionError("%d acknowledged records lost or changed, first %r (got %r)"
                             % (len(lost), lost[0], got.get(lost[0][0])))
    print("ok %d acknowledged records all read back" % len(want))


SEEK_GROUP = "seeker"
SEEK_METADATA = "seeked back: re-read from 3"


def committed_of(consumer, topic):
    from confluent_kafka import TopicPartition
    [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    return tp.offset, tp.metadata


def confluent_seek_commit(bootstrap, topic):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(topic, value=b"%d" % i, partition=0)
    if producer.flush(30) != 0:
        raise AssertionError("produce failed")
    config = {"bootstrap.servers": bootstrap, "group.id": SEEK_GROUP,
              "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.commit(offsets=[TopicPartition(topic, 0, 8, metadata="read to 8")], asynchronous=False)
    got = committed_of(consumer, topic)
    if got != (8, "read to 8"):
        raise AssertionError("committed %r, want (8, 'read to 8')" % (got,))
    consumer.commit(offsets=[TopicPartition(topic, 0, 3, metadata=SEEK_METADATA)], asynchronous=False)
    got = committed_of(consumer, topic)
    if got != (3, SEEK_METADATA):
        raise AssertionError("after the commit back: %r, want (3, %r)" % (got, SEEK_METADATA))
    consumer.close()
    fresh = Consumer(config)
    fresh.subscribe([topic])
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        m = fresh.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise AssertionError("consumer: %s" % m.error())
        if m.offset() != 3 or m.value() != b"3":
            raise AssertionError("the group resumed at %d (%r), want 3" % (m.offset(), m.value()))
        break
    else:
        raise AssertionError("the group read nothing")
    fresh.close()
    print("ok confluent-kafka: committed 8, then 3 with its metadata; the group resumed at 3")


def confluent_committed_check(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": SEEK_GROUP,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0)])
    got = committed_of(consumer, topic)
    consumer.close()
    if got != (3, SEEK_METADATA):
        raise AssertionError("after the restart: %r, want (3, %r)" % (got, SEEK_METADATA))
    print("ok the commit back to 3 and its metadata survived the restart")


def kafka_python_seek_commit(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(10):
        producer.send(topic, value=b"%d" % i, partition=0).get(timeout=30)
    producer.close()
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="kp-" + SEEK_GROUP,
                             enable_auto_commit=False)
    consumer.assign([tp])
    for offset, metadata in [(8, "read to 8"), (3, SEEK_METADATA)]:
        consumer.commit({tp: OffsetAndMetadata(offset, metadata, -1)})
        got = consumer._coordinator.fetch_committed_offsets([tp])[tp]
        if (got.offset, got.metadata) != (offset, metadata):
            raise AssertionError("committed %r, want %r" % (got, (offset, metadata)))
    consumer.close()
    print("ok kafka-python: committed 8, then 3, each with its metadata")


def read_back(bootstrap, topic, count):
    """Reads every partition of the topic to its end; returns the counts of
    duplicates, losses and records of a key out of production order."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-back-" + topic,
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = {}
    last_of_key = {}
    reordered = 0
    done = {p for p in partitions if ends[p] == 0}
    deadline = time.time() + 3 * DEADLINE_S
    while len(done) < len(partitions):
        if time.time() > deadline:
            raise AssertionError("reading back stopped short of %r" % ends)
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            raise AssertionError("read back: %s" % m.error())
        n = int(m.value())
        seen[n] = seen.get(n, 0) + 1
        key = m.key()
        if key in last_of_key and last_of_key[key] > n:
            reordered += 1
        last_of_key[key] = n
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    consumer.close()
    duplicates = sum(c - 1 for c in seen.values())
    losses = sum(1 for n in range(count) if n not in seen)
    return duplicates, losses, reordered


def confluent_idempotent(bootstrap, topic, count):
    from confluent_kafka import Producer

    failures = []
    acked = [0]

    def report(err, _msg):
        if err is not None:
            failures.append(err)
        else:
            acked[0] += 1

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 0, "batch.num.messages": 50,
                         "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 200,
                         "message.timeout.ms": 300000})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=b"%d" % (i % 97), value=b"%d" % i, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(300) != 0 or failures:
        raise AssertionError("%d not delivered, first error %r" % (count - acked[0], failures[:1]))
    duplicates, losses, reordered = read_back(bootstrap, topic, count)
    print("ok confluent-kafka idempotent: records %d acknowledged %d duplicates %d losses %d reordered %d"
          % (count, acked[0], duplicates, losses, reordered))


def confluent_pipelined(bootstrap, topic, count):
    from confluent_kafka import Producer

    failures = []
    acked = [0]

    def report(err, _msg):
        if err is not None:
            failures.append(err)
        else:
            acked[0] += 1

    # One record a batch, one partition, five requests in flight (the
    # clients' default and idempotence's limit): batches keep arriving
    # while the one before is in a sync point.
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "max.in.flight.requests.per.connection": 5,
                         "linger.ms": 0, "batch.num.messages": 1,
                         "message.timeout.ms": 300000})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=b"k", value=b"%d" % i, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(300) != 0 or failures:
        raise AssertionError("%d not delivered, first error %r" % (count - acked[0], failures[:1]))
    duplicates, losses, reordered = read_back(bootstrap, topic, count)
    print("ok confluent-kafka pipelined: records %d acknowledged %d duplicates %d losses %d reordered %d"
          % (count, acked[0], duplicates, losses, reordered))


def kafka_python_idempotent(bootstrap, topic, count):
    import kafka
    from kafka import KafkaProducer

    # The defaults of kafka-python 3: idempotence on (and so acks=all).
    producer = KafkaProducer(bootstrap_servers=bootstrap, batch_size=512, reconnect_backoff_ms=10)
    futures = [producer.send(topic, key=b"%d" % (i % 97), value=b"%d" % i) for i in range(count)]
    producer.flush(300)
    failures = [f.exception for f in futures if not f.succeeded()]
    producer.close()
    if failures:
        raise AssertionError("%d not delivered, first error %r" % (len(failures), failures[0]))
    duplicates, losses, reordered = read_back(bootstrap, topic, count)
    print("ok kafka-python %s idempotent (its defaults): records %d acknowledged %d duplicates %d losses %d reordered %d"
          % (kafka.__version__, count, count, duplicates, losses, reordered))


def expect_error(future, code, what):
    from confluent_kafka import KafkaException
    try:
        future.result(10)
    except KafkaException as e:
        if e.args[0].code() != code:
            raise AssertionError("%s: %r, want error %d" % (what, e.args[0], code))
        return
    raise AssertionError("%s: accepted, want error %d" % (what, code))


def confluent_admin(bootstrap, topic):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic, OffsetSpec, ResourceType)
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KpTopicPartition

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    resource = ConfigResource(ResourceType.TOPIC, topic)

    def described():
        return admin.describe_configs([resource])[resource].result(10)

    configs = described()
    for name in ["retention.ms", "retention.bytes", "segment.bytes", "max.message.bytes", "cleanup.policy"]:
        if name not in configs:
            raise AssertionError("DescribeConfigs lacks %s: %r" % (name, sorted(configs)))
    if not configs["segment.bytes"].is_read_only or configs["retention.ms"].is_read_only:
        raise AssertionError("read-only flags: %r" % configs)
    if configs["cleanup.policy"].value != "delete":
        raise AssertionError("cleanup.policy %r" % configs["cleanup.policy"].value)

    def incremental(name, value, op=AlterConfigOpType.SET):
        entry = ConfigEntry(name, value, incremental_operation=op)
        r = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        return admin.incremental_alter_configs([r])[r]

    incremental("retention.ms", "3600000").result(10)
    if described()["retention.ms"].value != "3600000":
        raise AssertionError("retention.ms not set: %r" % described()["retention.ms"])
    expect_error(incremental("segment.bytes", "1000"), KafkaError.INVALID_CONFIG, "segment.bytes")
    expect_error(incremental("retention.ms", "-5"), KafkaError.INVALID_CONFIG, "retention.ms=-5")
    if described()["retention.ms"].value != "3600000":
        raise AssertionError("a refused alteration changed retention.ms")
    # AlterConfigs replaces the topic's own configs: retention.ms goes back.
    legacy = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "1000000"})
    admin.alter_configs([legacy])[legacy].result(10)
    after = described()
    if after["retention.bytes"].value != "1000000" or after["retention.ms"].value != "-1":
        raise AssertionError("after AlterConfigs: %r %r" % (after["retention.bytes"], after["retention.ms"]))

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(10)
    if len(admin.list_topics(topic, timeout=10).topics[topic].partitions) != 4:
        raise AssertionError("CreatePartitions did not make 4 partitions")
    expect_error(admin.create_partitions([NewPartitions(topic, 3)])[topic],
                 KafkaError.INVALID_PARTITIONS, "fewer partitions")

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    base = 1_700_000_000_000
    for i in range(10):
        # The largest timestamp is record 6's.
        producer.produce(topic, value=b"%d" % i, partition=0, timestamp=base + (10_000 if i == 6 else i))
    if producer.flush(30) != 0:
        raise AssertionError("produce failed")
    tp = TopicPartition(topic, 0)
    found = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(10)
    if (found.offset, found.timestamp) != (6, base + 10_000):
        raise AssertionError("max timestamp at %d (%d), want 6" % (found.offset, found.timestamp))
    deleted = admin.delete_records([TopicPartition(topic, 0, 4)])
    low = list(deleted.values())[0].result(10).low_watermark
    if low != 4:
        raise AssertionError("DeleteRecords low watermark %d, want 4" % low)
    earliest = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10).offset
    if earliest != 4:
        raise AssertionError("earliest offset %d after DeleteRecords, want 4" % earliest)
    expect_error(list(admin.delete_records([TopicPartition(topic, 0, 99)]).values())[0],
                 KafkaError.OFFSET_OUT_OF_RANGE, "DeleteRecords past the end")

    group = "admin-" + topic
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "admin-test",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    deadline = time.time() + DEADLINE_S
    first = None
    while first is None and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            first = m
    if first is None or first.offset() != 4:
        raise AssertionError("the consumer began at %r, want the new log start 4" % (first and first.offset()))
    consumer.commit(message=first, asynchronous=False)
    listed = admin.list_consumer_groups().result(10)
    states = {g.group_id: str(g.state) for g in listed.valid}
    if "STABLE" not in states.get(group, ""):
        raise AssertionError("ListGroups: %r" % states)
    description = admin.describe_consumer_groups([group])[group].result(10)
    if len(description.members) != 1 or description.members[0].client_id != "admin-test":
        raise AssertionError("DescribeGroups: %r" % description)
    expect_error(admin.delete_consumer_groups([group])[group], KafkaError.NON_EMPTY_GROUP, "delete an active group")
    kp_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kp_tp = KpTopicPartition(topic, 0)
    refused = kp_admin.delete_group_offsets(group, [kp_tp])
    if refused.get(kp_tp) is None or "GroupSubscribedToTopic" not in repr(refused.get(kp_tp)):
        raise AssertionError("OffsetDelete while subscribed: %r" % refused)
    consumer.close()
    done = kp_admin.delete_group_offsets(group, [kp_tp])
    if done.get(kp_tp) is not None and "NoError" not in repr(done.get(kp_tp)):
        raise AssertionError("OffsetDelete: %r" % done)
    offsets = admin.list_consumer_group_offsets(
        [__import__("confluent_kafka").ConsumerGroupTopicPartitions(group, [tp])])[group].result(10)
    if offsets.topic_partitions[0].offset >= 0:
        raise AssertionError("the commit survived OffsetDelete: %r" % offsets.topic_partitions)
    kp_admin.close()
    admin.delete_consumer_groups([group])[group].result(10)
    described_group = admin.describe_consumer_groups([group])[group].result(10)
    if "DEAD" not in str(described_group.state):
        raise AssertionError("after DeleteGroups: %r" % described_group.state)

    # librdkafka answers describe_cluster from Metadata; kafka-python sends
    # DescribeCluster.
    cluster = admin.describe_cluster().result(10)
    if cluster.cluster_id != "seglog" or len(cluster.nodes) != 1 or cluster.controller.id != 0:
        raise AssertionError("describe_cluster: %r" % cluster)
    kp_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    cluster = kp_admin.describe_cluster()
    kp_admin.close()
    if (cluster["cluster_id"], cluster["controller_id"], len(cluster["brokers"])) != ("seglog", 0, 1):
        raise AssertionError("DescribeCluster: %r" % cluster)
    print("ok confluent-kafka AdminClient: configs, partitions, records, max timestamp, groups, cluster")


SECURE_RECORDS = 20


def confluent_secure(bootstrap, topic, config):
    from confluent_kafka import Consumer, Producer

    settings = json.loads(config)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **settings})
    acked = []

    def on_delivery(err, msg):
        if err is not None:
            raise SystemExit("delivery failed: %s" % err)
        acked.append(msg.offset())

    for i in range(SECURE_RECORDS):
        producer.produce(topic, value=b"secure %d" % i, on_delivery=on_delivery)
    if producer.flush(DEADLINE_S) != 0 or len(acked) != SECURE_RECORDS:
        raise SystemExit("only %d of %d records acknowledged" % (len(acked), SECURE_RECORDS))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "secure-" + topic,
                         "auto.offset.reset": "earliest", **settings})
    consumer.subscribe([topic])
    values = []
    deadline = time.time() + DEADLINE_S
    while len(values) < SECURE_RECORDS and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit("consume failed: %s" % msg.error())
        values.append(msg.value())
    consumer.close()
    expected = [b"secure %d" % i for i in range(SECURE_RECORDS)]
    if values != expected:
        raise SystemExit("read back %r, not %r" % (values, expected))
    print("ok confluent-kafka %s: %d records produced and consumed"
          % (settings.get("sasl.mechanisms", settings.get("security.protocol")), SECURE_RECORDS))


def confluent_denied(bootstrap, topic, config):
    from confluent_kafka import KafkaError, Producer

    errors = []
    settings = json.loads(config)
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000,
                         "error_cb": errors.append, **settings})
    failed = []
    producer.produce(topic, value=b"must not land", on_delivery=lambda err, msg: failed.append(err))
    producer.flush(DEADLINE_S)
    if not failed or failed[0] is None:
        raise SystemExit("a record was acknowledged with a wrong password")
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    if not auth or "Authentication failed" not in auth[0].str():
        raise SystemExit("no authentication failure reported: %r" % [e.str() for e in errors])
    print("ok confluent-kafka refused: %s" % auth[0].str())


def confluent_forbidden(bootstrap, topic, config):
    from confluent_kafka import KafkaError, Producer

    settings = json.loads(config)
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000, **settings})
    results = []
    for i in range(3):
        producer.produce(topic, value=b"forbidden %d" % i,
                         on_delivery=lambda err, msg: results.append(err))
    producer.flush(DEADLINE_S)
    codes = [err.code() if err else None for err in results]
    if codes != [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3:
        raise SystemExit("expected TOPIC_AUTHORIZATION_FAILED for every record, got %r" % results)
    print("ok confluent-kafka: TOPIC_AUTHORIZATION_FAILED for all 3 records")


def kafka_python_secure(bootstrap, topic, config):
    from kafka import KafkaConsumer, KafkaProducer

    settings = json.loads(config)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings)
    for i in range(SECURE_RECORDS):
        producer.send(topic, value=b"secure %d" % i).get(timeout=DEADLINE_S)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="secure-" + topic,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000, **settings)
    values = [msg.value for msg in consumer][:SECURE_RECORDS]
    consumer.close()
    expected = [b"secure %d" % i for i in range(SECURE_RECORDS)]
    if values != expected:
        raise SystemExit("read back %r, not %r" % (values, expected))
    print("ok kafka-python %s: %d records produced and consumed"
          % (settings.get("sasl_mechanism"), SECURE_RECORDS))


def kafka_python_denied(bootstrap, topic, config):
    import logging

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    # kafka-python logs the broker's refusal and keeps retrying until its
    # bootstrap times out; the log says why.
    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    collect = Collect()
    logging.getLogger("kafka").addHandler(collect)
    logging.getLogger("kafka").setLevel(logging.INFO)
    settings = json.loads(config)
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=10000, **settings)
        producer.send(topic, value=b"must not land").get(timeout=10)
    except KafkaError as e:
        refusals = [line for line in collect.lines if "Authentication failed" in line]
        if not refusals:
            raise SystemExit("failed (%r), but no authentication failure logged: %r"
                             % (e, collect.lines[-5:]))
        print("ok kafka-python refused: %s" % refusals[0])
        return
    raise SystemExit("a record was acknowledged with a wrong password")


# Each scenario, and how it reads the arguments after BOOTSTRAP TOPIC.
SCENARIOS = {
    "confluent-groups": (confluent_groups, []),
    "kafka-python-groups": (kafka_python_groups, []),
    "confluent-rebalance": (confluent_rebalance, []),
    "confluent-too-large": (confluent_too_large, []),
    "confluent-acked": (confluent_acked, [str, int]),
    "confluent-read-all": (confluent_read_all, [str]),
    "confluent-seek-commit": (confluent_seek_commit, []),
    "confluent-committed-check": (confluent_committed_check, []),
    "kafka-python-seek-commit": (kafka_python_seek_commit, []),
    "confluent-admin": (confluent_admin, []),
    "confluent-idempotent": (confluent_idempotent, [int]),
    "kafka-python-idempotent": (kafka_python_idempotent, [int]),
    "confluent-pipelined": (confluent_pipelined, [int]),
    "confluent-secure": (confluent_secure, [str]),
    "confluent-denied": (confluent_denied, [str]),
    "confluent-forbidden": (confluent_forbidden, [str]),
    "kafka-python-secure": (kafka_python_secure, [str]),
    "kafka-python-denied": (kafka_python_denied, [str]),
}


def main():
    scenario, bootstrap, topic = sys.argv[1:4]
    if scenario not in SCENARIOS:
        raise SystemExit("unknown scenario " + scenario)
    run, parsers = SCENARIOS[scenario]
    extra = sys.argv[4:]
    if len(extra) != len(parsers):
        raise SystemExit("%s takes %d more arguments, not %d" % (scenario, len(parsers), len(extra)))
    run(bootstrap, topic, *[parse(arg) for parse, arg in zip(parsers, extra)])


if __name__ == "__main__":
    main()

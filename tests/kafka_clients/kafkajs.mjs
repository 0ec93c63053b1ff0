// kafkajs against a running `seglog serve --kafka`, run by
// tests/serve/idempotence.rs as `node kafkajs.mjs BOOTSTRAP TOPIC COUNT`
// (through a proxy that drops produce replies): an idempotent producer
// (idempotent: true) sends COUNT keyed records in batches of 50, every one
// acknowledged; then a consumer in a group reads the topic from the start.
// Prints one line `ok ... records N ... duplicates D losses L reordered R`
// and exits 0, or exits 1 naming what went wrong.
import kafkajs from "kafkajs";

const { Kafka, logLevel } = kafkajs;
const [bootstrap, topic, countText] = process.argv.slice(2);
const count = Number(countText);
const BATCH = 50;
const DEADLINE_MS = 120_000;

const kafka = new Kafka({
  clientId: "seglog-test",
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 20, retries: 30 },
});

async function produce() {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let first = 0; first < count; first += BATCH) {
    const messages = [];
    for (let i = first; i < Math.min(first + BATCH, count); i++) {
      messages.push({ key: String(i % 97), value: String(i) });
    }
    await producer.send({ topic, acks: -1, messages });
  }
  await producer.disconnect();
}

async function consume() {
  const consumer = kafka.consumer({ groupId: "kafkajs-" + topic });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  const lastOfKey = new Map();
  let reordered = 0;
  let read = 0;
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${read} of ${count} in time`)), DEADLINE_MS);
    consumer.run({
      eachMessage: async ({ message }) => {
        const n = Number(message.value.toString());
        const key = message.key.toString();
        seen.set(n, (seen.get(n) ?? 0) + 1);
        if (lastOfKey.has(key) && lastOfKey.get(key) > n) reordered++;
        lastOfKey.set(key, n);
        read++;
        if (seen.size === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await done;
  await consumer.disconnect();
  let duplicates = 0;
  for (const c of seen.values()) duplicates += c - 1;
  let losses = 0;
  for (let i = 0; i < count; i++) if (!seen.has(i)) losses++;
  return { duplicates, losses, reordered };
}

try {
  await produce();
  const { duplicates, losses, reordered } = await consume();
  console.log(
    `ok kafkajs 2.2.4 idempotent, consumed in a group: records ${count} acknowledged ${count} ` +
      `duplicates ${duplicates} losses ${losses} reordered ${reordered}`,
  );
  process.exit(0);
} catch (e) {
  console.error(`kafkajs: ${e.stack ?? e}`);
  process.exit(1);
}

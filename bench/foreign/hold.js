// A Redis lock client other than haita, for BenchmarkRedisForeign: it takes
// and releases keys with node-redlock on one ioredis client, as told on
// stdin, one command a line, and answers each on stdout.
//
//   hold KEY TTLms   take KEY (retrying while held), answer "held"
//   release          release the key held, answer "released"
const readline = require("readline");
const Redis = require("ioredis");
const { default: Redlock } = require("redlock");

const client = new Redis(process.argv[2]);
const redlock = new Redlock([client], { retryCount: -1, retryDelay: 5, retryJitter: 0 });
let lock = null;

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const [cmd, key, ttl] = line.trim().split(" ");
  try {
    if (cmd === "hold") {
      lock = await redlock.acquire([key], Number(ttl));
      process.stdout.write("held\n");
    } else if (cmd === "release") {
      await lock.release();
      lock = null;
      process.stdout.write("released\n");
    }
  } catch (e) {
    process.stdout.write("error " + String(e).replace(/\n/g, " ") + "\n");
  }
});
rl.on("close", () => client.quit());

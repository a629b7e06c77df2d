// The `theseus.local/test-sleeper` image: a stand-in container for the kubelet's own tests. It serves GET /healthz
// on $HOST:$PORT, appends a line to $OUT_FILE (if set) when it starts and when it receives SIGTERM, exits with
// $EXIT_CODE after $EXIT_AFTER_MS (if set), and otherwise runs until SIGTERM. ECHO_ENV=A,B also notes those variables;
// IGNORE_SIGTERM=1 makes it ignore SIGTERM.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const host = process.env["HOST"] ?? "127.0.0.1";
const port = Number(process.env["PORT"] ?? "0");
const outFile = process.env["OUT_FILE"];
const note = (line: string): void => {
  if (outFile !== undefined) appendFileSync(outFile, `${line}\n`);
};

const server = createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
  res.end(req.url === "/healthz" ? "ok\n" : "not found\n");
});
server.listen(port, host, () => {
  note(`started pid=${process.pid} host=${host} args=${JSON.stringify(process.argv.slice(2))}`);
  // ECHO_ENV=A,B writes "env A=..." lines, so a test can see what the kubelet passed in.
  for (const name of (process.env["ECHO_ENV"] ?? "").split(",").filter((n) => n !== "")) note(`env ${name}=${process.env[name] ?? ""}`);
});
process.on("SIGTERM", () => {
  note("sigterm");
  // IGNORE_SIGTERM=1 plays a program that hangs on shutdown: only SIGKILL at the end of the grace period stops it.
  if (process.env["IGNORE_SIGTERM"] !== "1") server.close(() => process.exit(0));
});
const exitAfter = process.env["EXIT_AFTER_MS"];
if (exitAfter !== undefined) {
  setTimeout(() => {
    note("exiting");
    process.exit(Number(process.env["EXIT_CODE"] ?? "0"));
  }, Number(exitAfter));
}

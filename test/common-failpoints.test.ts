// Failpoints are inert unless THESEUS_FAILPOINTS names them; crash, hang and error do what they say in a real child
// process, which is how the migration tests and issue 9's matrix reach each step boundary.
import test from "ava";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { FAILPOINT_CRASH_EXIT_CODE, TheseusError, allFailpoints, defineFailpoints, failpoint, parseFailpoints } from "../common/index.js";

const commonIndex = fileURLToPath(new URL("../common/index.js", import.meta.url));

function runChild(failpoints: string, timeoutMs: number): Promise<{ code: number | null; signal: string | null; stdout: string }> {
  const script = `import { failpoint } from ${JSON.stringify(commonIndex)};
    try { await failpoint("demo.step"); process.stdout.write("passed"); }
    catch (e) { process.stdout.write("threw:" + e.code + ":" + e.message); }`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, THESEUS_FAILPOINTS: failpoints },
      stdio: ["ignore", "pipe", "inherit"],
      timeout: timeoutMs,
    });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve({ code, signal, stdout }));
  });
}

test("parseFailpoints reads NAME=ACTION lists and refuses malformed entries", (t) => {
  t.deepEqual([...parseFailpoints(" a.b=crash, c=hang,d=error ,")], [["a.b", "crash"], ["c", "hang"], ["d", "error"]]);
  t.is(parseFailpoints(undefined).size, 0);
  for (const bad of ["a", "a=explode", "=crash"]) {
    const error = t.throws(() => parseFailpoints(bad), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
  }
});

test("a failpoint not named passes; defined names are listed with their component", async (t) => {
  await failpoint("test.never-enabled");
  defineFailpoints("test", ["test.z", "test.a"]);
  const listed = allFailpoints().filter((f) => f.component === "test");
  t.deepEqual(listed.map((f) => f.name), ["test.a", "test.z"]);
});

test("an unrelated name leaves the step inert in a child", async (t) => {
  t.is((await runChild("other.step=crash", 30_000)).stdout, "passed");
});

test("crash exits at once with 137", async (t) => {
  const result = await runChild("demo.step=crash", 30_000);
  t.is(result.code, FAILPOINT_CRASH_EXIT_CODE);
  t.is(result.stdout, "");
});

test("error throws an internal TheseusError naming the failpoint", async (t) => {
  t.is((await runChild("demo.step=error", 30_000)).stdout, "threw:internal:failpoint demo.step");
});

test("hang never passes the step", async (t) => {
  // The child's only way out is the spawn timeout's SIGTERM: it neither passed nor threw.
  const result = await runChild("demo.step=hang", 3_000);
  t.is(result.signal, "SIGTERM");
  t.is(result.stdout, "");
});

// proto/gen is what `buf generate` makes from proto/, never a hand edit: regenerate into a scratch directory and compare.
import test from "ava";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

test("proto/gen matches a fresh `buf generate` of proto/", async (t) => {
  const scratch = await mkdtemp(join(tmpdir(), "theseus-buf-"));
  try {
    await new Promise<void>((resolve, reject) => {
      execFile(join(ROOT, "node_modules/.bin/buf"), ["generate", "-o", scratch], { cwd: ROOT }, (error, _stdout, stderr) => (error === null ? resolve() : reject(new Error(`buf generate failed: ${stderr}`))));
    });
    const committed = join(ROOT, "proto/gen");
    const fresh = join(scratch, "proto/gen");
    t.deepEqual(await files(fresh), await files(committed), "the same files");
    for (const file of await files(committed)) {
      t.is(await readFile(join(committed, file), "utf8"), await readFile(join(fresh, file), "utf8"), `${file} differs: run \`npm run generate\``);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
});

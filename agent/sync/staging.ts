// The target's staging directory, `<volume>/.theseus-partial`: where new content is written before it is verified and
// renamed into place (same filesystem, so the rename is atomic and nothing is copied).
//
// The directory sits in the app-writable volume root, so anyone who can write the volume can swap its name for a
// symlink to a directory outside the volume between two rounds or during one. O_NOFOLLOW guards only the last
// component of a path, so nothing here ever goes through the name after it was checked: the directory is opened once
// with O_DIRECTORY|O_NOFOLLOW, verified (a directory, ours, writable by nobody else), and every later operation uses
// `/proc/self/fd/N/<entry>`, which the kernel resolves through the open descriptor, not through the name. A
// non-directory found at the name is unlinked (unlink never follows); a directory that is not ours fails the round,
// because deleting its contents recursively through an unverified path is exactly the attack.
import fs from "node:fs";
import path from "node:path";
import { TheseusError } from "../../common/index.js";

export const STAGING_DIR = ".theseus-partial";

const OPEN_DIR = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
const OWN_UID = process.getuid?.() ?? -1;

export class StagingDir {
  private fd = -1;
  private readonly name: string;

  constructor(root: string) {
    this.name = path.join(root, STAGING_DIR);
  }

  get open(): boolean {
    return this.fd >= 0;
  }

  /** Path of an entry inside the verified directory (valid only while it is open). */
  entry(name: string): string {
    if (this.fd < 0) throw new TheseusError("internal", "the staging directory is not open");
    return `/proc/self/fd/${this.fd}/${name}`;
  }

  /**
   * Opens what a previous round left, if it is a directory of ours; a symlink, file or anything else at the name is
   * removed (the entry itself, never what it points to). Returns whether a staging directory is open now.
   */
  openExisting(): boolean {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.name);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw TheseusError.from(e);
    }
    if (!st.isDirectory()) {
      fs.unlinkSync(this.name);
      return false;
    }
    this.openVerified();
    return true;
  }

  /** Creates the directory (mode 0700) and opens it. */
  create(): void {
    if (this.fd >= 0) return;
    try {
      fs.mkdirSync(this.name, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw TheseusError.from(e);
      // Something appeared at the name since the round started: only a directory of ours is acceptable.
      if (!fs.lstatSync(this.name).isDirectory()) {
        fs.unlinkSync(this.name);
        fs.mkdirSync(this.name, { mode: 0o700 });
      }
    }
    this.openVerified();
  }

  private openVerified(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.name, OPEN_DIR);
    } catch (e) {
      // ELOOP/ENOTDIR: swapped for a symlink or a file between the check and the open.
      throw untrusted(`cannot open it as a directory (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
    }
    const st = fs.fstatSync(fd);
    if (!st.isDirectory() || (OWN_UID >= 0 && st.uid !== OWN_UID) || (st.mode & 0o022) !== 0) {
      fs.closeSync(fd);
      throw untrusted(`it is owned by uid ${st.uid} with mode ${(st.mode & 0o7777).toString(8)}, not the agent's own 0700 directory`);
    }
    this.fd = fd;
  }

  names(): string[] {
    return fs.readdirSync(this.entry(""));
  }

  /**
   * Removes the entries (all but `keep`). They are the agent's own, inside a directory nobody else may write, so a
   * recursive removal cannot be redirected (the round itself never creates directories here).
   */
  clear(keep?: string): void {
    for (const n of this.names()) if (n !== keep) fs.rmSync(this.entry(n), { recursive: true, force: true });
  }

  /** Empties and removes the directory. The name is removed with rmdir, which never follows a symlink. */
  remove(): void {
    if (this.fd < 0) return;
    try {
      this.clear();
    } finally {
      this.close();
    }
    try {
      fs.rmdirSync(this.name);
    } catch (e) {
      // Swapped for something else meanwhile (a symlink: ENOTDIR; a directory of someone else's: ENOTEMPTY): not ours
      // to delete. Gone already: fine.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR" && code !== "ENOTEMPTY") throw TheseusError.from(e);
    }
  }

  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

function untrusted(why: string, cause?: unknown): TheseusError {
  return new TheseusError("failed_precondition", `the staging directory ${STAGING_DIR} at the target volume's root is not trusted: ${why}`, {
    ...(cause === undefined ? {} : { cause }),
    hint: `something other than the agent created or replaced ${STAGING_DIR}; inspect it and remove it, then run the round again`,
  });
}

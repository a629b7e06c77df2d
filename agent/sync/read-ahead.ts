// A large file read in order, the next chunks in the background: while the caller fingerprints and diffs one chunk on
// the event loop, the kernel copies the next ones from the page cache on libuv's thread pool (two at once with three
// buffers: one copy at a time was slower than the diff). Reading is a third of a source's time on a large file (a
// 1 GiB database re-read at the final round: ~240 ms of ~700 in read()), and the two overlap on any machine with a
// second core.
import fs from "node:fs";

type Settled = { n: number } | { error: unknown };

export class ReadAhead {
  /** Reads in flight, in file order: at most one buffer fewer than the caller gave. */
  private readonly ahead: Array<{ pos: number; buf: Buffer; done: Promise<Settled> }> = [];
  private readonly free: Buffer[];
  /** The buffer the last chunk returned is in: the caller's until its next call. */
  private current: Buffer | undefined;
  /** Where the next read ahead starts; `end` once a read came short. */
  private issueAt = 0;

  /**
   * Reads `fd` into `bufs` (two or more buffers of one size, the chunk size; the caller's, so a round reuses them
   * from file to file), never past `end` (the size the walk saw). With n buffers, n - 1 chunks are read ahead.
   */
  constructor(
    private readonly fd: number,
    bufs: readonly Buffer[],
    private readonly end: number,
  ) {
    const size = bufs[0]?.length ?? 0;
    if (bufs.length < 2 || size === 0 || bufs.some((b) => b.length !== size)) throw new RangeError("ReadAhead needs two or more buffers of one non-zero size");
    this.free = [...bufs];
  }

  /**
   * The chunk at `pos` (empty at the end). It stays valid until the next call; the chunks after it are read
   * meanwhile, unless this one came short (the end of the file). Read errors are thrown as fs throws them.
   */
  async read(pos: number): Promise<Buffer> {
    if (this.current !== undefined) this.free.push(this.current);
    this.current = undefined;
    let buf: Buffer;
    let n: number;
    const head = this.ahead[0];
    if (head !== undefined && head.pos === pos) {
      this.ahead.shift();
      const r = await head.done;
      buf = head.buf;
      if ("error" in r) {
        this.free.push(buf);
        throw r.error;
      }
      n = r.n;
    } else {
      // Not where we read ahead (the first chunk, or the caller skipped): start over from here.
      await this.settle();
      buf = this.free.pop() as Buffer;
      try {
        n = fs.readSync(this.fd, buf, 0, Math.min(buf.length, this.end - pos), pos);
      } catch (e) {
        this.free.push(buf);
        throw e;
      }
      this.issueAt = pos + n;
    }
    this.current = buf;
    if (n < buf.length) this.issueAt = this.end; // the end of the file: nothing more to read ahead
    while (this.issueAt < this.end && this.free.length > 0) {
      const next = this.free.pop() as Buffer;
      const length = Math.min(next.length, this.end - this.issueAt);
      this.ahead.push({ pos: this.issueAt, buf: next, done: readInto(this.fd, next, length, this.issueAt) });
      this.issueAt += length;
    }
    return buf.subarray(0, n);
  }

  /** Waits for the reads still in flight: the descriptor must not be closed (and reused) under them. */
  async settle(): Promise<void> {
    for (const a of this.ahead.splice(0)) {
      await a.done;
      this.free.push(a.buf);
    }
  }
}

/** One positioned read on the thread pool; never rejects (an error is its result, thrown when the chunk is wanted). */
function readInto(fd: number, buf: Buffer, length: number, position: number): Promise<Settled> {
  return new Promise((resolve) => {
    fs.read(fd, buf, 0, length, position, (error, n) => resolve(error === null ? { n } : { error }));
  });
}

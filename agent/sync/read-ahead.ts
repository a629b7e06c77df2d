// A large file read in order, the next chunk in the background: while the caller fingerprints and diffs one chunk on
// the event loop, the kernel copies the next one from the page cache on libuv's thread pool. Reading is a third of
// a source's time on a large file (a 1 GiB database re-read at the final round: ~240 ms of ~700 in read()), and the
// two overlap on any machine with a second core.
import fs from "node:fs";

type Settled = { n: number } | { error: unknown };

export class ReadAhead {
  private next: { pos: number; buf: Buffer; done: Promise<Settled> } | undefined;

  /**
   * Reads `fd` into `bufs` (two buffers of one size, the chunk size; the caller's, so a round reuses them from file
   * to file), never past `end` (the size the walk saw).
   */
  constructor(
    private readonly fd: number,
    private readonly bufs: readonly [Buffer, Buffer],
    private readonly end: number,
  ) {
    if (bufs[0].length !== bufs[1].length || bufs[0].length === 0) throw new RangeError("ReadAhead needs two buffers of one non-zero size");
  }

  /**
   * The chunk at `pos` (empty at the end). It stays valid until the next call; the chunk after it is read meanwhile,
   * unless this one came short (the end of the file). Read errors are thrown as fs throws them.
   */
  async read(pos: number): Promise<Buffer> {
    let buf: Buffer;
    let n: number;
    const ahead = this.next;
    this.next = undefined;
    if (ahead !== undefined && ahead.pos === pos) {
      const r = await ahead.done;
      if ("error" in r) throw r.error;
      ({ buf } = ahead);
      ({ n } = r);
    } else {
      if (ahead !== undefined) await ahead.done;
      buf = this.bufs[0];
      n = fs.readSync(this.fd, buf, 0, Math.min(buf.length, this.end - pos), pos);
    }
    const nextPos = pos + n;
    if (n === buf.length && nextPos < this.end) {
      const other = buf === this.bufs[0] ? this.bufs[1] : this.bufs[0];
      this.next = { pos: nextPos, buf: other, done: readInto(this.fd, other, Math.min(other.length, this.end - nextPos), nextPos) };
    }
    return buf.subarray(0, n);
  }

  /** Waits for a read still in flight: the descriptor must not be closed (and reused) under it. */
  async settle(): Promise<void> {
    const ahead = this.next;
    this.next = undefined;
    if (ahead !== undefined) await ahead.done;
  }
}

/** One positioned read on the thread pool; never rejects (an error is its result, thrown when the chunk is wanted). */
function readInto(fd: number, buf: Buffer, length: number, position: number): Promise<Settled> {
  return new Promise((resolve) => {
    fs.read(fd, buf, 0, length, position, (error, n) => resolve(error === null ? { n } : { error }));
  });
}

// Block lists offered by the target (sync protocol 6). A source that lost its state (a new mover pod, an agent
// reinstalled on another node) has no list of the content the target holds for a large file, so without help it can
// only send a changed large file whole: 1 GiB on the wire for a database with 1% of its pages rewritten. The target
// always keeps that list (it verifies patches with it), so it offers it:
// 1. the source opens its side of the round with the hashes of the lists it holds (lists_held, a few bytes per large
//    file);
// 2. the target, before the index entry of each large file whose hash is not among them, sends the list's canonical
//    encoding in pieces (list_offer); it waits for the source's hashes at its first large file only;
// 3. the source writes each piece to its block store as it arrives and keeps the list once its sha256 is the hash it
//    was offered under (a list is self-verifying: it is stored under the hash of its encoding, which is the file's
//    content hash). Its merge-join then finds the list where a list it kept itself would be, and diffs against it.
// The list costs 32 bytes per 4 KiB data block up (8 MiB per GiB, ~0.8%), paid once after a lost state: the source
// keeps it (with the fingerprints of its next read of the file) like any list it took itself.
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { MAX_DATA_BYTES, MAX_LISTS_HELD, MAX_OFFERED_LIST_BYTES } from "./codec.js";
import type { RoundStatsWire, SyncRecord } from "./codec.js";
import { HASH_BYTES } from "./block-list.js";
import type { BlockStore, ListReceipt } from "./state.js";

type ListOffer = Extract<SyncRecord, { t: "list_offer" }>;

/** Hashes per lists_held record: a record stays within MAX_DATA_BYTES. */
const HELD_PER_RECORD = MAX_DATA_BYTES / HASH_BYTES;
/** Bytes of a list per list_offer record (a frame carries several). */
export const OFFER_PIECE_BYTES = 256 * 1024;
/**
 * What one round takes in offered lists (8 GiB: the lists of 1 TiB of large files). Past it further offers are
 * dropped, and their files are sent whole, so that a hostile target cannot fill the source's state.
 */
const MAX_OFFERED_ROUND_BYTES = 8 * 1024 * 1024 * 1024;

/** The source's first records: the lists it holds (at most MAX_LISTS_HELD named; the target offers the others). */
export function* heldListRecords(store: BlockStore): Generator<SyncRecord> {
  let batch: Buffer[] = [];
  let named = 0;
  for (const hash of store.held()) {
    if (named++ === MAX_LISTS_HELD) break;
    batch.push(hash);
    if (batch.length === HELD_PER_RECORD) {
      yield { t: "lists_held", hashes: Buffer.concat(batch), last: false };
      batch = [];
    }
  }
  yield { t: "lists_held", hashes: Buffer.concat(batch), last: true };
}

/** The target's side: the hashes the source named, complete once its last lists_held record arrived. */
export class HeldLists {
  private readonly hashes = new Set<string>();
  private complete = false;
  private resolve: () => void = () => {};
  /** Settles when the source's hashes are all in, or the round is over (`ended`). */
  readonly ready: Promise<void>;

  constructor(ended: AbortSignal) {
    this.ready = new Promise((r) => (this.resolve = r));
    ended.addEventListener("abort", () => this.resolve(), { once: true });
  }

  get done(): boolean {
    return this.complete;
  }

  /** A lists_held record; anything else first means the source skipped them, which a source of this protocol never does. */
  take(rec: SyncRecord): void {
    if (rec.t !== "lists_held") {
      throw new TheseusError("protocol", `the source sent ${rec.t} before naming the block lists it holds`, { hint: "the source agent is broken or hostile" });
    }
    for (let o = 0; o < rec.hashes.length; o += HASH_BYTES) {
      this.hashes.add(Buffer.from(rec.hashes.buffer, rec.hashes.byteOffset + o, HASH_BYTES).toString("hex"));
    }
    if (this.hashes.size > MAX_LISTS_HELD) throw new TheseusError("protocol", `the source named more than ${MAX_LISTS_HELD} block lists`);
    if (rec.last) {
      this.complete = true;
      this.resolve();
    }
  }

  has(hex: string): boolean {
    return this.hashes.has(hex);
  }
}

/** The list_offer records of a stored list, in order; none when the list is not stored or too large to offer. */
export function* offerRecords(store: BlockStore, hash: Uint8Array): Generator<ListOffer> {
  const list = store.pieces(hash, OFFER_PIECE_BYTES);
  if (list === undefined || list.total === 0 || list.total > MAX_OFFERED_LIST_BYTES) return;
  let offset = 0;
  for (const piece of list.pieces()) {
    yield { t: "list_offer", hash, total: list.total, offset, piece };
    offset += piece.length;
  }
}

/**
 * The source's side: list_offer records, taken off the target's stream as they arrive (the merge-join never sees
 * them) and written to the block store. Every offer must be complete before the target's next other record.
 */
export class OfferedLists {
  private current: { hash: Buffer; total: number; received: number; receipt: ListReceipt | undefined } | undefined;
  private roundBytes = 0;
  private warned = false;
  private indexEnded = false;

  constructor(
    private readonly store: BlockStore,
    private readonly stats: RoundStatsWire,
    private readonly logger: Logger,
  ) {}

  take(rec: ListOffer): void {
    // Offers come before the entries they serve; after the index, one would only fill the state.
    if (this.indexEnded) throw broken("the target offered a block list after its index");
    let cur = this.current;
    if (cur === undefined) {
      if (rec.offset !== 0) throw broken("an offered block list began past its start");
      this.roundBytes += rec.total;
      // Copied: a decoded record's bytes are a view of its frame.
      const hash = Buffer.from(rec.hash);
      cur = { hash, total: rec.total, received: 0, receipt: this.roundBytes <= MAX_OFFERED_ROUND_BYTES ? this.open(hash) : undefined };
      this.current = cur;
    } else if (rec.offset !== cur.received || rec.total !== cur.total || !cur.hash.equals(rec.hash)) {
      throw broken("an offered block list was cut by another one");
    }
    if (cur.receipt !== undefined) {
      try {
        cur.receipt.write(rec.piece);
      } catch (e) {
        cur.receipt.abort();
        cur.receipt = undefined;
        this.cannotKeep(e);
      }
    }
    cur.received += rec.piece.length;
    if (cur.received < cur.total) return;
    this.current = undefined;
    if (cur.receipt === undefined) return;
    let kept: boolean;
    try {
      kept = cur.receipt.commit();
    } catch (e) {
      cur.receipt.abort();
      return this.cannotKeep(e);
    }
    if (!kept) throw broken(`the target offered a block list whose hash is not ${Buffer.from(cur.hash).toString("hex").slice(0, 16)}`);
    this.stats.listsReceived++;
    this.stats.listBytesReceived += cur.total;
  }

  /** The target's next record is not an offer: the one begun must have ended. */
  expectComplete(): void {
    if (this.current !== undefined) throw broken("the target's index went on before an offered block list was complete");
  }

  /** The target's index ended (its end record was taken): no offer may follow. */
  endOfIndex(): void {
    this.expectComplete();
    this.indexEnded = true;
  }

  /** Drops a list half received (the round failed). */
  close(): void {
    this.current?.receipt?.abort();
    this.current = undefined;
  }

  private open(hash: Uint8Array): ListReceipt | undefined {
    try {
      return this.store.receive(hash);
    } catch (e) {
      this.cannotKeep(e);
      return undefined;
    }
  }

  /** The state's disk is full or read-only: the list is dropped and its file, if changed, goes whole. */
  private cannotKeep(e: unknown): void {
    if (this.warned) return;
    this.warned = true;
    this.logger.warn({ err: (e as Error).message, dir: this.store.dir }, "cannot keep the block lists the target offers; changed large files go whole");
  }
}

function broken(message: string): TheseusError {
  return new TheseusError("protocol", message, { hint: "the target agent is broken or hostile" });
}

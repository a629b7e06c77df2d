// Token bucket for the sender's bandwidth limit. The rate can change while a round runs (SetBandwidth), takes effect
// within one sleep slice, and 0 means unlimited. The clock is injected so the logic is tested without real time.
import { sleep } from "../../common/index.js";

export interface Clock {
  nowMs(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = { nowMs: () => performance.now(), sleep: (ms, signal) => sleep(ms, signal) };

/** Longest single sleep, so that a rate change is noticed quickly. */
const SLICE_MS = 100;

export class TokenBucket {
  private tokens: number;
  private last: number;
  private rate: number;

  constructor(
    bytesPerSecond: number,
    private readonly clock: Clock = realClock,
    /** Burst allowance in seconds of the rate: a short burst smooths frame granularity without breaking the limit. */
    private readonly burstSeconds = 0.05,
  ) {
    this.rate = Math.max(0, bytesPerSecond);
    this.tokens = this.burst();
    this.last = clock.nowMs();
  }

  get bytesPerSecond(): number {
    return this.rate;
  }

  setRate(bytesPerSecond: number): void {
    this.refill();
    this.rate = Math.max(0, bytesPerSecond);
    this.tokens = Math.min(this.tokens, this.burst());
  }

  private burst(): number {
    return this.rate * this.burstSeconds;
  }

  private refill(): void {
    const now = this.clock.nowMs();
    if (this.rate > 0) this.tokens = Math.min(this.burst(), this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
  }

  /** Waits until `bytes` may be sent. Debt is allowed (a frame larger than the burst), and paid by waiting. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.rate === 0) return;
    this.refill();
    this.tokens -= bytes;
    while (this.tokens < 0 && this.rate > 0) {
      const waitMs = Math.min(SLICE_MS, (-this.tokens / this.rate) * 1000);
      await this.clock.sleep(Math.max(1, waitMs), signal);
      this.refill();
    }
    if (this.rate === 0) this.tokens = 0;
  }
}

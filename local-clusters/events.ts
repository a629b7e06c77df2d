// Kubernetes Events, as the kubelet and controllers record them: repeated reason+message on one object bumps the
// count of the existing Event instead of creating a new one.
import type { CoreV1Api, V1ObjectReference } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError } from "../common/index.js";

export type EventType = "Normal" | "Warning";

export class EventRecorder {
  private readonly seen = new Map<string, { name: string; count: number; first: Date }>();

  constructor(
    private readonly core: CoreV1Api,
    private readonly source: { component: string; host?: string },
    private readonly logger: Logger,
  ) {}

  async record(ref: V1ObjectReference, type: EventType, reason: string, message: string): Promise<void> {
    const namespace = ref.namespace ?? "default";
    const key = `${ref.uid ?? ref.name}\0${reason}\0${message}`;
    const now = new Date();
    const prior = this.seen.get(key);
    try {
      if (prior !== undefined) {
        prior.count++;
        await this.core.replaceNamespacedEvent({
          name: prior.name,
          namespace,
          body: this.body(ref, type, reason, message, prior.count, prior.first, now, prior.name),
        });
        return;
      }
      const created = await this.core.createNamespacedEvent({ namespace, body: this.body(ref, type, reason, message, 1, now, now) });
      this.seen.set(key, { name: created.metadata?.name ?? "", count: 1, first: now });
    } catch (error) {
      this.logger.debug({ reason, err: describeError(error) }, "could not record event");
      this.seen.delete(key);
    }
  }

  forget(uid: string): void {
    for (const k of this.seen.keys()) if (k.startsWith(`${uid}\0`)) this.seen.delete(k);
  }

  private body(ref: V1ObjectReference, type: EventType, reason: string, message: string, count: number, first: Date, now: Date, name?: string) {
    const namespace = ref.namespace ?? "default";
    return {
      metadata: name === undefined ? { generateName: `${ref.name ?? "object"}.`, namespace } : { name, namespace },
      involvedObject: ref,
      reason,
      message,
      type,
      source: this.source,
      firstTimestamp: first,
      lastTimestamp: now,
      count,
      reportingComponent: this.source.component,
      reportingInstance: this.source.host ?? "",
    };
  }
}

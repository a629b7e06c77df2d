// One pod on an emulated node: prepares its volumes as directories, runs each container of a known image as a local
// process, probes it, restarts it per restartPolicy, reports the truth in pod status and events, and on deletion stops
// it with SIGTERM and the grace period before removing the pod object. Init containers, startup probes, lifecycle
// hooks and resource limits are not emulated.
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { chmod, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join, relative, isAbsolute } from "node:path";
import type {
  CoreV1Api,
  V1Container,
  V1ContainerStatus,
  V1ObjectReference,
  V1Pod,
  V1PodCondition,
  V1Probe,
  V1Volume,
} from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError } from "../common/index.js";
import type { EventRecorder } from "./events.js";
import { knownImagesText, resolveImage } from "./images.js";
import type { ResolvedImage } from "./images.js";
import { isNotFound } from "../kube/index.js";
import type { ProcessRecord } from "./processes.js";
import { stopProcess } from "./processes.js";

export interface PodWorkerContext {
  readonly core: CoreV1Api;
  readonly events: EventRecorder;
  readonly logger: Logger;
  readonly nodeName: string;
  /** The node's address: the pod's hostIP. */
  readonly nodeIp: string;
  /** The pod's own directory: volumes, logs, pid files. */
  readonly podDir: string;
  readonly podIp: string;
  readonly apiServerPort: number;
}

type ContainerPhase = "waiting" | "running" | "terminated";

interface ProbeState {
  readonly probe: V1Probe;
  /** The prober's ticker (one per probe, as the kubelet's probe workers), set once the pod starts. */
  timer: NodeJS.Timeout | undefined;
  successes: number;
  failures: number;
  ok: boolean;
  running: boolean;
}

interface ContainerRun {
  readonly spec: V1Container;
  image: ResolvedImage | undefined;
  phase: ContainerPhase;
  waitingReason: string;
  waitingMessage: string;
  child: ChildProcess | undefined;
  record: ProcessRecord | undefined;
  startedAt: Date | undefined;
  finishedAt: Date | undefined;
  exitCode: number | undefined;
  terminatedReason: string | undefined;
  lastTerminated: { exitCode: number; reason: string; startedAt: Date; finishedAt: Date } | undefined;
  restartCount: number;
  restartAt: number | undefined;
  killing: boolean;
  readiness: ProbeState | undefined;
  liveness: ProbeState | undefined;
}

/** Kubernetes' backoff is 10 s doubling to 5 min; locally 1 s doubling to 30 s keeps tests and demos quick. */
const BACKOFF_INITIAL_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

class VolumeNotReady extends Error {}

export class PodWorker {
  private pod: V1Pod;
  private readonly containers = new Map<string, ContainerRun>();
  private started = false;
  private preparing = false;
  private terminating: Promise<void> | undefined;
  private lastStatus = "";
  private readonly conditionSince = new Map<string, { status: string; at: Date }>();
  private readonly startTime = new Date();
  private mounts = new Map<string, string>(); // volume name -> host dir
  private done = false;
  private pushing: Promise<void> = Promise.resolve();

  constructor(
    pod: V1Pod,
    private readonly ctx: PodWorkerContext,
  ) {
    this.pod = pod;
    const prior = new Map((pod.status?.containerStatuses ?? []).map((s) => [s.name, s]));
    for (const spec of pod.spec?.containers ?? []) {
      const before = prior.get(spec.name);
      // A container that ran before this node daemon (re)started is being restarted: count it.
      const ranBefore = before?.state?.running !== undefined || before?.state?.terminated !== undefined;
      this.containers.set(spec.name, {
        spec,
        image: undefined,
        phase: "waiting",
        waitingReason: "ContainerCreating",
        waitingMessage: "",
        child: undefined,
        record: undefined,
        startedAt: undefined,
        finishedAt: undefined,
        exitCode: undefined,
        terminatedReason: undefined,
        lastTerminated: undefined,
        restartCount: (before?.restartCount ?? 0) + (ranBefore ? 1 : 0),
        restartAt: undefined,
        killing: false,
        readiness: spec.readinessProbe === undefined ? undefined : newProbe(spec.readinessProbe),
        liveness: spec.livenessProbe === undefined ? undefined : newProbe(spec.livenessProbe),
      });
    }
  }

  get finished(): boolean {
    return this.done;
  }

  private get ref(): V1ObjectReference {
    return {
      kind: "Pod",
      apiVersion: "v1",
      namespace: this.pod.metadata?.namespace ?? "default",
      name: this.pod.metadata?.name ?? "",
      uid: this.pod.metadata?.uid ?? "",
    };
  }

  private containerRef(name: string): V1ObjectReference {
    return { ...this.ref, fieldPath: `spec.containers{${name}}` };
  }

  /** Called with the latest pod object whenever the node's pods are listed. */
  async sync(pod: V1Pod): Promise<void> {
    this.pod = pod;
    if (pod.metadata?.deletionTimestamp !== undefined) {
      this.terminating ??= this.terminate();
      return;
    }
    if (this.terminating !== undefined) return;
    if (!this.started && !this.preparing) await this.start();
    await this.tick();
  }

  /** Runs due restarts and pushes status when it changed; called about once a second. Probes have their own tickers. */
  async tick(): Promise<void> {
    if (this.terminating !== undefined || !this.started) return;
    const now = Date.now();
    for (const run of this.containers.values()) {
      if (run.phase === "terminated" && run.restartAt !== undefined && now >= run.restartAt) {
        run.restartAt = undefined;
        run.restartCount++;
        // Until the new process runs, report it as being created (with lastState), never as the old exit.
        run.phase = "waiting";
        run.waitingReason = "ContainerCreating";
        run.waitingMessage = "";
        this.spawnContainer(run);
      }
    }
    await this.pushStatus();
  }

  /**
   * One ticker per probe, started when the pod starts and running until it terminates, as the kubelet's prober
   * workers do: the first tick at once, then every periodSeconds; a tick is skipped while the container is not
   * running, during initialDelaySeconds after its start, or while the previous probe still runs. So readiness comes
   * at the first tick after the app serves, never later than one period; a probe schedule restarted with each
   * container start would add a failed probe and a whole period to every start-up.
   */
  private startProbers(): void {
    for (const run of this.containers.values()) {
      for (const [state, kind] of [
        [run.liveness, "Liveness"],
        [run.readiness, "Readiness"],
      ] as const) {
        if (state === undefined || state.timer !== undefined) continue;
        const tick = (): void => {
          if (this.terminating !== undefined || state.running || run.phase !== "running" || run.killing) return;
          const startedAt = run.startedAt?.getTime() ?? Date.now();
          // The kubelet compares whole seconds since the container started.
          if (Math.floor((Date.now() - startedAt) / 1000) < (state.probe.initialDelaySeconds ?? 0)) return;
          void this.probe(run, state, kind);
        };
        state.timer = setInterval(tick, Math.max(1, state.probe.periodSeconds ?? 10) * 1000);
        setImmediate(tick);
      }
    }
  }

  private stopProbers(): void {
    for (const run of this.containers.values()) {
      for (const state of [run.liveness, run.readiness]) {
        if (state?.timer === undefined) continue;
        clearInterval(state.timer);
        state.timer = undefined;
      }
    }
  }

  private async start(): Promise<void> {
    this.preparing = true;
    try {
      const unknown: string[] = [];
      for (const run of this.containers.values()) {
        run.image = resolveImage(run.spec.image ?? "");
        if (run.image === undefined) {
          unknown.push(run.spec.name);
          const msg = `Failed to pull image "${run.spec.image ?? ""}": the theseus local kubelet runs only images it knows (any tag): ${knownImagesText()}`;
          // Like a real kubelet: ErrImagePull on the first attempt, then ImagePullBackOff; the event is recorded once.
          const first = run.waitingReason !== "ErrImagePull" && run.waitingReason !== "ImagePullBackOff";
          run.waitingReason = first ? "ErrImagePull" : "ImagePullBackOff";
          run.waitingMessage = first ? msg : `Back-off pulling image "${run.spec.image ?? ""}": not a known image; known: ${knownImagesText()}`;
          if (first) await this.ctx.events.record(this.containerRef(run.spec.name), "Warning", "Failed", msg);
        }
      }
      if (unknown.length > 0) {
        this.started = false;
        await this.pushStatus(true);
        return;
      }
      try {
        await this.prepareVolumes();
      } catch (error) {
        const message = error instanceof VolumeNotReady ? error.message : describeError(error);
        await this.ctx.events.record(this.ref, "Warning", "FailedMount", `Unable to attach or mount volumes: ${message}`);
        await this.pushStatus(true);
        return;
      }
      // Leftovers of a previous node daemon's run of this pod (it crashed or was killed): stop them first.
      for (const run of this.containers.values()) {
        const record = readPidFile(this.pidFile(run.spec.name));
        if (record !== undefined) await stopProcess(record, 2000);
      }
      this.started = true;
      this.startProbers();
      for (const run of this.containers.values()) this.spawnContainer(run);
      await this.pushStatus();
    } finally {
      this.preparing = false;
    }
  }

  private pidFile(container: string): string {
    return join(this.ctx.podDir, `${container}.pid`);
  }

  private async prepareVolumes(): Promise<void> {
    const volumesDir = join(this.ctx.podDir, "volumes");
    await mkdir(volumesDir, { recursive: true });
    const mounts = new Map<string, string>();
    for (const v of this.pod.spec?.volumes ?? []) mounts.set(v.name, await this.prepareVolume(v, join(volumesDir, v.name)));
    this.mounts = mounts;
  }

  private async prepareVolume(v: V1Volume, dir: string): Promise<string> {
    const namespace = this.pod.metadata?.namespace ?? "default";
    if (v.persistentVolumeClaim !== undefined) {
      const claim = v.persistentVolumeClaim.claimName;
      const pvc = await this.ctx.core.readNamespacedPersistentVolumeClaim({ name: claim, namespace }).catch((e: unknown) => {
        if (isNotFound(e)) throw new VolumeNotReady(`persistentvolumeclaim "${claim}" not found`);
        throw e;
      });
      if (pvc.status?.phase !== "Bound" || pvc.spec?.volumeName === undefined) {
        throw new VolumeNotReady(`persistentvolumeclaim "${claim}" is not bound`);
      }
      const pv = await this.ctx.core.readPersistentVolume({ name: pvc.spec.volumeName });
      const path = pv.spec?.hostPath?.path ?? pv.spec?.local?.path;
      if (path === undefined) {
        throw new VolumeNotReady(`persistentvolume "${pvc.spec.volumeName}" has no local directory (hostPath or local); only such volumes can be used here`);
      }
      await mkdir(path, { recursive: true });
      return path;
    }
    if (v.hostPath !== undefined) {
      if (v.hostPath.type === "DirectoryOrCreate") await mkdir(v.hostPath.path, { recursive: true });
      return v.hostPath.path;
    }
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    if (v.emptyDir !== undefined) return dir;
    if (v.configMap !== undefined) {
      await this.writeConfigMap(v.configMap.name ?? "", v.configMap.items, v.configMap.optional === true, dir);
      if (v.configMap.defaultMode !== undefined) await chmodAll(dir, v.configMap.defaultMode);
      return dir;
    }
    if (v.secret !== undefined) {
      await this.writeSecret(v.secret.secretName ?? "", v.secret.items, v.secret.optional === true, dir);
      if (v.secret.defaultMode !== undefined) await chmodAll(dir, v.secret.defaultMode);
      return dir;
    }
    if (v.projected !== undefined) {
      for (const source of v.projected.sources ?? []) {
        if (source.configMap !== undefined) await this.writeConfigMap(source.configMap.name ?? "", source.configMap.items, source.configMap.optional === true, dir);
        if (source.secret !== undefined) await this.writeSecret(source.secret.name ?? "", source.secret.items, source.secret.optional === true, dir);
      }
      return dir;
    }
    if (v.downwardAPI !== undefined) {
      for (const item of v.downwardAPI.items ?? []) {
        if (item.fieldRef !== undefined) await writeFile(join(dir, item.path), this.fieldValue(item.fieldRef.fieldPath));
      }
      return dir;
    }
    throw new VolumeNotReady(`volume "${v.name}" is of a kind the emulated kubelet does not support (use emptyDir, configMap, secret, persistentVolumeClaim, hostPath, projected or downwardAPI)`);
  }

  private async writeConfigMap(name: string, items: Array<{ key: string; path: string }> | undefined, optional: boolean, dir: string): Promise<void> {
    const namespace = this.pod.metadata?.namespace ?? "default";
    const cm = await this.ctx.core.readNamespacedConfigMap({ name, namespace }).catch((e: unknown) => {
      if (isNotFound(e)) {
        if (optional) return undefined;
        throw new VolumeNotReady(`configmap "${name}" not found`);
      }
      throw e;
    });
    if (cm === undefined) return;
    const data = new Map<string, Buffer>();
    for (const [k, val] of Object.entries(cm.data ?? {})) data.set(k, Buffer.from(val));
    for (const [k, val] of Object.entries(cm.binaryData ?? {})) data.set(k, Buffer.from(val, "base64"));
    await writeItems(data, items, dir);
  }

  private async writeSecret(name: string, items: Array<{ key: string; path: string }> | undefined, optional: boolean, dir: string): Promise<void> {
    const namespace = this.pod.metadata?.namespace ?? "default";
    const secret = await this.ctx.core.readNamespacedSecret({ name, namespace }).catch((e: unknown) => {
      if (isNotFound(e)) {
        if (optional) return undefined;
        throw new VolumeNotReady(`secret "${name}" not found`);
      }
      throw e;
    });
    if (secret === undefined) return;
    const data = new Map<string, Buffer>();
    for (const [k, val] of Object.entries(secret.data ?? {})) data.set(k, Buffer.from(val, "base64"));
    await writeItems(data, items, dir);
  }

  private fieldValue(path: string): string {
    const m = this.pod.metadata;
    const label = /^metadata\.labels\['(.+)'\]$/.exec(path);
    if (label?.[1] !== undefined) return m?.labels?.[label[1]] ?? "";
    const ann = /^metadata\.annotations\['(.+)'\]$/.exec(path);
    if (ann?.[1] !== undefined) return m?.annotations?.[ann[1]] ?? "";
    switch (path) {
      case "metadata.name":
        return m?.name ?? "";
      case "metadata.namespace":
        return m?.namespace ?? "";
      case "metadata.uid":
        return m?.uid ?? "";
      case "metadata.labels":
        return Object.entries(m?.labels ?? {}).map(([k, v]) => `${k}="${v}"`).join("\n");
      case "metadata.annotations":
        return Object.entries(m?.annotations ?? {}).map(([k, v]) => `${k}="${v}"`).join("\n");
      case "spec.nodeName":
        return this.ctx.nodeName;
      case "spec.serviceAccountName":
        return this.pod.spec?.serviceAccountName ?? "default";
      case "status.podIP":
        return this.ctx.podIp;
      case "status.hostIP":
        return this.ctx.nodeIp;
      default:
        return "";
    }
  }

  /** mountPath -> host directory for one container. */
  private containerMounts(spec: V1Container): Map<string, string> {
    const out = new Map<string, string>();
    for (const vm of spec.volumeMounts ?? []) {
      const host = this.mounts.get(vm.name);
      if (host === undefined) continue;
      out.set(vm.mountPath, vm.subPath === undefined || vm.subPath === "" ? host : join(host, vm.subPath));
    }
    return out;
  }

  private async containerEnv(spec: V1Container, mounts: Map<string, string>): Promise<Record<string, string>> {
    const namespace = this.pod.metadata?.namespace ?? "default";
    const env: Record<string, string> = {
      PATH: process.env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: this.ctx.podDir,
      KUBERNETES_SERVICE_HOST: "127.0.0.1",
      KUBERNETES_SERVICE_PORT: String(this.ctx.apiServerPort),
      POD_NAME: this.pod.metadata?.name ?? "",
      POD_NAMESPACE: namespace,
      POD_UID: this.pod.metadata?.uid ?? "",
      NODE_NAME: this.ctx.nodeName,
    };
    const cms = new Map<string, Record<string, string> | undefined>();
    const secrets = new Map<string, Record<string, string> | undefined>();
    const cmData = async (name: string): Promise<Record<string, string> | undefined> => {
      if (!cms.has(name)) {
        const cm = await this.ctx.core.readNamespacedConfigMap({ name, namespace }).catch(() => undefined);
        cms.set(name, cm?.data);
      }
      return cms.get(name);
    };
    const secretData = async (name: string): Promise<Record<string, string> | undefined> => {
      if (!secrets.has(name)) {
        const s = await this.ctx.core.readNamespacedSecret({ name, namespace }).catch(() => undefined);
        secrets.set(
          name,
          s?.data === undefined ? undefined : Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()])),
        );
      }
      return secrets.get(name);
    };
    for (const from of spec.envFrom ?? []) {
      const data = from.configMapRef !== undefined ? await cmData(from.configMapRef.name ?? "") : from.secretRef !== undefined ? await secretData(from.secretRef.name ?? "") : undefined;
      if (data === undefined && from.configMapRef?.optional !== true && from.secretRef?.optional !== true) {
        throw new VolumeNotReady(`envFrom source ${from.configMapRef?.name ?? from.secretRef?.name ?? ""} not found`);
      }
      for (const [k, v] of Object.entries(data ?? {})) env[`${from.prefix ?? ""}${k}`] = v;
    }
    for (const e of spec.env ?? []) {
      if (e.value !== undefined) {
        env[e.name] = expand(e.value, env);
      } else if (e.valueFrom?.fieldRef !== undefined) {
        env[e.name] = this.fieldValue(e.valueFrom.fieldRef.fieldPath);
      } else if (e.valueFrom?.configMapKeyRef !== undefined) {
        const ref = e.valueFrom.configMapKeyRef;
        const v = (await cmData(ref.name ?? ""))?.[ref.key];
        if (v === undefined && ref.optional !== true) throw new VolumeNotReady(`configmap "${ref.name ?? ""}" key "${ref.key}" not found (env ${e.name})`);
        if (v !== undefined) env[e.name] = v;
      } else if (e.valueFrom?.secretKeyRef !== undefined) {
        const ref = e.valueFrom.secretKeyRef;
        const v = (await secretData(ref.name ?? ""))?.[ref.key];
        if (v === undefined && ref.optional !== true) throw new VolumeNotReady(`secret "${ref.name ?? ""}" key "${ref.key}" not found (env ${e.name})`);
        if (v !== undefined) env[e.name] = v;
      } else {
        env[e.name] = "";
      }
    }
    // Processes cannot mount: values that name a mount path (or a path under one) are rewritten to the host directory.
    for (const [k, v] of Object.entries(env)) env[k] = rewritePath(v, mounts);
    const byMountPath: Record<string, string> = {};
    for (const vm of spec.volumeMounts ?? []) {
      const host = mounts.get(vm.mountPath);
      if (host === undefined) continue;
      byMountPath[vm.mountPath] = host;
      env[`THESEUS_MOUNT_${vm.name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`] = host;
    }
    env["THESEUS_MOUNTS"] = JSON.stringify(byMountPath);
    // Every pod has its own loopback address; it must bind there, whatever its manifest says.
    env["POD_IP"] = this.ctx.podIp;
    env["HOST"] = this.ctx.podIp;
    return env;
  }

  private spawnContainer(run: ContainerRun): void {
    void this.spawnContainerAsync(run).catch(async (error: unknown) => {
      run.phase = "waiting";
      run.waitingReason = error instanceof VolumeNotReady ? "CreateContainerConfigError" : "CreateContainerError";
      run.waitingMessage = error instanceof Error ? error.message : String(error);
      await this.ctx.events.record(this.containerRef(run.spec.name), "Warning", "Failed", `Error: ${run.waitingMessage}`);
      this.scheduleRestart(run, true);
    });
  }

  private async spawnContainerAsync(run: ContainerRun): Promise<void> {
    const image = run.image;
    if (image === undefined) return;
    const mounts = this.containerMounts(run.spec);
    const env = await this.containerEnv(run.spec, mounts);
    // The image's own entrypoint (node and a script of this repository) is not a container path and is never
    // rewritten: with the repository under /tmp (CI's clean clone) and the agent chart's emptyDir at /tmp, the script's
    // path was taken for the mount's and the agent pod never started. A pod's `command` and `args` are container paths.
    const command = run.spec.command === undefined ? [...image.entrypoint] : run.spec.command.map((a) => rewritePath(expand(a, env), mounts));
    const args = (run.spec.args ?? (run.spec.command === undefined ? image.known.defaultArgs : [])).map((a) => rewritePath(expand(a, env), mounts));
    const argv = [...command, ...args];
    const cwd = run.spec.workingDir !== undefined ? rewritePath(run.spec.workingDir, mounts) : this.ctx.podDir;
    const logFile = join(this.ctx.podDir, `${run.spec.name}.log`);
    void this.ctx.events.record(
      this.containerRef(run.spec.name),
      "Normal",
      "Pulled",
      `Container image "${image.image}" already present on machine (runs ${image.known.script} as a local process)`,
    );
    const fd = openSync(logFile, "a");
    let child: ChildProcess;
    try {
      const [cmd, ...rest] = argv;
      child = spawn(cmd ?? "", rest, { cwd, env, detached: true, stdio: ["ignore", fd, fd] });
    } finally {
      closeSync(fd);
    }
    const startedAt = new Date();
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    const record: ProcessRecord = { pid: child.pid ?? -1, marker: argv[1] ?? argv[0] ?? "", envMarker: `POD_UID=${env["POD_UID"] ?? ""}` };
    writeFileSync(this.pidFile(run.spec.name), JSON.stringify(record));
    run.child = child;
    run.record = record;
    run.phase = "running";
    run.startedAt = startedAt;
    run.finishedAt = undefined;
    run.exitCode = undefined;
    run.killing = false;
    // A new container starts unready, with fresh counters; the probers' tickers keep their rhythm.
    for (const state of [run.readiness, run.liveness]) if (state !== undefined) Object.assign(state, { successes: 0, failures: 0, ok: false });
    child.once("exit", (code, signal) => void this.onExit(run, child, code, signal));
    this.ctx.logger.info({ pod: this.ref.name, container: run.spec.name, pid: child.pid, argv }, "container started");
    await this.ctx.events.record(this.containerRef(run.spec.name), "Normal", "Created", `Created container ${run.spec.name}`);
    await this.ctx.events.record(this.containerRef(run.spec.name), "Normal", "Started", `Started container ${run.spec.name} (pid ${child.pid ?? "?"}, pod IP ${this.ctx.podIp})`);
    await this.pushStatus();
  }

  private async onExit(run: ContainerRun, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (run.child !== child) return;
    run.child = undefined;
    rmSync(this.pidFile(run.spec.name), { force: true });
    run.phase = "terminated";
    run.finishedAt = new Date();
    run.exitCode = code ?? 128 + signalNumber(signal);
    run.terminatedReason = run.exitCode === 0 ? "Completed" : "Error";
    run.lastTerminated = { exitCode: run.exitCode, reason: run.terminatedReason, startedAt: run.startedAt ?? run.finishedAt, finishedAt: run.finishedAt };
    this.ctx.logger.info({ pod: this.ref.name, container: run.spec.name, exitCode: run.exitCode }, "container exited");
    if (this.terminating === undefined) this.scheduleRestart(run, run.exitCode !== 0);
    await this.pushStatus();
  }

  private scheduleRestart(run: ContainerRun, failed: boolean): void {
    const policy = this.pod.spec?.restartPolicy ?? "Always";
    if (policy === "Never" || (policy === "OnFailure" && !failed)) return;
    const delay = Math.min(BACKOFF_INITIAL_MS * 2 ** Math.min(run.restartCount, 10), BACKOFF_MAX_MS);
    run.restartAt = Date.now() + delay;
    if (run.phase === "terminated" && run.exitCode !== 0) {
      void this.ctx.events.record(this.containerRef(run.spec.name), "Warning", "BackOff", `Back-off restarting failed container ${run.spec.name}`);
    }
  }

  private async probe(run: ContainerRun, state: ProbeState, kind: "Readiness" | "Liveness"): Promise<void> {
    state.running = true;
    const p = state.probe;
    try {
      const result = await runProbe(p, this.ctx.podIp, run.spec, this.ctx.podDir);
      if (run.phase !== "running") return;
      if (result.ok) {
        state.successes++;
        state.failures = 0;
        if (state.successes >= (kind === "Liveness" ? 1 : (p.successThreshold ?? 1))) state.ok = true;
      } else {
        state.failures++;
        state.successes = 0;
        await this.ctx.events.record(this.containerRef(run.spec.name), "Warning", "Unhealthy", `${kind} probe failed: ${result.message}`);
        if (state.failures >= (p.failureThreshold ?? 3)) {
          state.ok = false;
          if (kind === "Liveness" && !run.killing) {
            await this.ctx.events.record(this.containerRef(run.spec.name), "Normal", "Killing", `Container ${run.spec.name} failed liveness probe, will be restarted`);
            void this.kill(run, this.gracePeriodSeconds());
          }
        }
      }
    } finally {
      state.running = false;
    }
    await this.pushStatus();
  }

  private gracePeriodSeconds(): number {
    return this.pod.metadata?.deletionGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30;
  }

  /** SIGTERM to the container's process group, SIGKILL after the grace period. */
  private async kill(run: ContainerRun, graceSeconds: number): Promise<void> {
    const child = run.child;
    if (child === undefined || child.pid === undefined) return;
    run.killing = true;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    signalGroup(child.pid, "SIGTERM");
    const timer = setTimeout(() => signalGroup(child.pid ?? -1, "SIGKILL"), Math.max(0, graceSeconds) * 1000);
    await exited;
    clearTimeout(timer);
  }

  private async terminate(): Promise<void> {
    this.stopProbers();
    const grace = this.gracePeriodSeconds();
    for (const run of this.containers.values()) run.restartAt = undefined;
    await Promise.all(
      [...this.containers.values()]
        .filter((r) => r.child !== undefined)
        .map(async (run) => {
          // The signal goes out at once; the event is recorded beside it (as the kubelet's asynchronous recorder does),
          // so that an API round trip never delays the stop that a cutover waits for.
          void this.ctx.events.record(this.containerRef(run.spec.name), "Normal", "Killing", `Stopping container ${run.spec.name}`);
          await this.kill(run, grace);
        }),
    );
    await this.pushStatus(true).catch(() => undefined);
    // The processes are gone: clean the pod's directory before the final delete, so that a pod absent from the API
    // never leaves files behind for an observer to trip on.
    await rm(this.ctx.podDir, { recursive: true, force: true });
    try {
      await this.ctx.core.deleteNamespacedPod({
        name: this.ref.name ?? "",
        namespace: this.ref.namespace ?? "default",
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: this.ref.uid ?? "" } },
      });
    } catch (error) {
      if (!isNotFound(error) && (error as { code?: number }).code !== 409) throw error;
    }
    this.ctx.events.forget(this.ref.uid ?? "");
    this.done = true;
  }

  /** Stops the pod's processes without touching the API (node daemon shutdown). */
  async shutdown(maxGraceSeconds: number): Promise<void> {
    this.terminating ??= Promise.resolve();
    this.stopProbers();
    for (const run of this.containers.values()) run.restartAt = undefined;
    await Promise.all([...this.containers.values()].map((run) => this.kill(run, Math.min(this.gracePeriodSeconds(), maxGraceSeconds))));
  }

  /** The pod is gone from the API (force-deleted): kill without grace. */
  async forget(): Promise<void> {
    await this.shutdown(0);
    await rm(this.ctx.podDir, { recursive: true, force: true });
    this.done = true;
  }

  private status(): Record<string, unknown> {
    const statuses: V1ContainerStatus[] = [];
    for (const run of this.containers.values()) {
      const ready = run.phase === "running" && !run.killing && (run.readiness === undefined || run.readiness.ok);
      const waiting = run.phase === "waiting" || (run.phase === "terminated" && run.restartAt !== undefined);
      statuses.push({
        name: run.spec.name,
        image: run.spec.image ?? "",
        imageID: run.image === undefined ? "" : `theseus.local://${run.image.known.script}`,
        containerID: run.record === undefined ? undefined : `theseus://${run.record.pid}`,
        ready,
        started: run.phase === "running",
        restartCount: run.restartCount,
        state:
          waiting
            ? {
                waiting: {
                  reason: run.phase === "terminated" ? "CrashLoopBackOff" : run.waitingReason,
                  ...(run.phase === "terminated"
                    ? { message: `back-off restarting failed container ${run.spec.name}` }
                    : run.waitingMessage === ""
                      ? {}
                      : { message: run.waitingMessage }),
                },
              }
            : run.phase === "running"
              ? { running: { startedAt: run.startedAt ?? new Date() } }
              : {
                  terminated: {
                    exitCode: run.exitCode ?? 0,
                    reason: run.terminatedReason ?? "Error",
                    startedAt: run.startedAt ?? new Date(),
                    finishedAt: run.finishedAt ?? new Date(),
                    containerID: `theseus://${run.record?.pid ?? 0}`,
                  },
                },
        ...(run.lastTerminated !== undefined && (run.phase !== "terminated" || run.restartAt !== undefined)
          ? {
              lastState: {
                terminated: {
                  exitCode: run.lastTerminated.exitCode,
                  reason: run.lastTerminated.reason,
                  startedAt: run.lastTerminated.startedAt,
                  finishedAt: run.lastTerminated.finishedAt,
                },
              },
            }
          : {}),
      } as V1ContainerStatus);
    }
    const runs = [...this.containers.values()];
    const allTerminatedForGood = runs.length > 0 && runs.every((r) => r.phase === "terminated" && r.restartAt === undefined);
    let phase: string;
    if (!this.started) phase = "Pending";
    else if (allTerminatedForGood) phase = runs.every((r) => r.exitCode === 0) ? "Succeeded" : "Failed";
    else if (runs.some((r) => r.phase === "running" || r.startedAt !== undefined)) phase = "Running";
    else phase = "Pending";
    const allReady = statuses.length > 0 && statuses.every((s) => s.ready);
    const conditions: V1PodCondition[] = [
      this.condition("Initialized", this.started || this.terminating !== undefined, this.started ? undefined : "PodInitializing"),
      this.condition("Ready", allReady, allReady ? undefined : "ContainersNotReady"),
      this.condition("ContainersReady", allReady, allReady ? undefined : "ContainersNotReady"),
      ...(this.pod.status?.conditions ?? []).filter((c) => c.type === "PodScheduled"),
    ];
    return {
      phase,
      conditions,
      hostIP: this.ctx.nodeIp,
      podIP: this.ctx.podIp,
      podIPs: [{ ip: this.ctx.podIp }],
      startTime: this.startTime,
      containerStatuses: statuses,
      qosClass: this.pod.status?.qosClass ?? "BestEffort",
    };
  }

  private condition(type: string, ok: boolean, reason: string | undefined): V1PodCondition {
    const status = ok ? "True" : "False";
    const prior = this.conditionSince.get(type);
    const since = prior !== undefined && prior.status === status ? prior.at : new Date();
    this.conditionSince.set(type, { status, at: since });
    return { type, status, lastProbeTime: undefined as unknown as Date, lastTransitionTime: since, ...(reason === undefined ? {} : { reason }) };
  }

  /** Status patches go out one at a time, each computed when its turn comes, so an older one never lands last. */
  private pushStatus(force = false): Promise<void> {
    this.pushing = this.pushing.then(() => this.pushStatusNow(force));
    return this.pushing;
  }

  private async pushStatusNow(force: boolean): Promise<void> {
    if (this.done) return;
    const status = this.status();
    const json = JSON.stringify(status);
    if (!force && json === this.lastStatus) return;
    this.lastStatus = json;
    try {
      await this.ctx.core.patchNamespacedPodStatus(
        { name: this.ref.name ?? "", namespace: this.ref.namespace ?? "default", body: { status } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (error) {
      this.lastStatus = "";
      if (!isNotFound(error)) this.ctx.logger.warn({ pod: this.ref.name, err: describeError(error) }, "status update failed");
    }
  }

}

function newProbe(probe: V1Probe): ProbeState {
  return { probe, timer: undefined, successes: 0, failures: 0, ok: false, running: false };
}

async function runProbe(p: V1Probe, podIp: string, spec: V1Container, cwd: string): Promise<{ ok: boolean; message: string }> {
  const timeoutMs = (p.timeoutSeconds ?? 1) * 1000;
  const port = (value: number | string | undefined): number => {
    if (typeof value === "number") return value;
    const named = spec.ports?.find((x) => x.name === value);
    return named?.containerPort ?? Number(value);
  };
  if (p.httpGet !== undefined) {
    const scheme = (p.httpGet.scheme ?? "HTTP").toLowerCase();
    const url = `${scheme}://${p.httpGet.host ?? podIp}:${port(p.httpGet.port)}${p.httpGet.path ?? "/"}`;
    try {
      const headers = Object.fromEntries((p.httpGet.httpHeaders ?? []).map((h) => [h.name, h.value]));
      const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
      await res.body?.cancel();
      return res.status >= 200 && res.status < 400 ? { ok: true, message: "" } : { ok: false, message: `HTTP probe failed with statuscode: ${res.status} (GET ${url})` };
    } catch (error) {
      return { ok: false, message: `Get "${url}": ${error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error)}` };
    }
  }
  if (p.tcpSocket !== undefined) {
    const host = p.tcpSocket.host ?? podIp;
    const target = port(p.tcpSocket.port);
    return new Promise((resolve) => {
      const socket = connect({ host, port: target, timeout: timeoutMs });
      socket.once("connect", () => {
        socket.destroy();
        resolve({ ok: true, message: "" });
      });
      socket.once("timeout", () => {
        socket.destroy();
        resolve({ ok: false, message: `dial tcp ${host}:${target}: i/o timeout` });
      });
      socket.once("error", (e) => resolve({ ok: false, message: `dial tcp ${host}:${target}: ${e.message}` }));
    });
  }
  if (p.exec?.command !== undefined && p.exec.command.length > 0) {
    const [cmd, ...args] = p.exec.command;
    return new Promise((resolve) => {
      const child = spawn(cmd ?? "", args, { cwd, stdio: "ignore", timeout: timeoutMs });
      child.once("error", (e) => resolve({ ok: false, message: e.message }));
      child.once("exit", (code) => resolve(code === 0 ? { ok: true, message: "" } : { ok: false, message: `command exited with ${code ?? "a signal"}` }));
    });
  }
  return { ok: true, message: "" };
}

async function writeItems(data: Map<string, Buffer>, items: Array<{ key: string; path: string }> | undefined, dir: string): Promise<void> {
  const entries: Array<[string, Buffer]> =
    items === undefined ? [...data.entries()] : items.flatMap((i) => (data.has(i.key) ? [[i.path, data.get(i.key) as Buffer] as [string, Buffer]] : []));
  for (const [path, value] of entries) {
    const target = join(dir, path);
    const rel = relative(dir, target);
    if (rel.startsWith("..") || isAbsolute(rel)) continue; // a key may not escape its volume
    await mkdir(join(target, ".."), { recursive: true });
    await writeFile(target, value);
  }
}

async function chmodAll(dir: string, mode: number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isFile()) await chmod(join(dir, entry.name), mode);
  }
}

/** Kubernetes' $(VAR) expansion in env values, command and args; $$ escapes. */
export function expand(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === "$$") return "$";
    return name !== undefined && env[name] !== undefined ? env[name] : m;
  });
}

/**
 * Rewrites a value that is a container path under a volume mount to the host directory behind it: "/data" or
 * "/data/x" with a mount at /data, and the same after "=" in "--flag=/data". Anything else is left alone.
 */
export function rewritePath(value: string, mounts: ReadonlyMap<string, string>): string {
  const eq = value.startsWith("-") ? value.indexOf("=") : -1;
  const head = eq >= 0 ? value.slice(0, eq + 1) : "";
  const path = eq >= 0 ? value.slice(eq + 1) : value;
  let best: [string, string] | undefined;
  for (const [mountPath, host] of mounts) {
    const mp = mountPath.replace(/\/+$/, "") || "/";
    if (path === mp || path.startsWith(mp === "/" ? "/" : `${mp}/`)) {
      if (best === undefined || mp.length > best[0].length) best = [mp, host];
    }
  }
  if (best === undefined) return value;
  return head + join(best[1], path.slice(best[0].length));
}

function readPidFile(path: string): ProcessRecord | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as ProcessRecord;
  } catch {
    return undefined;
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // gone already
    }
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  switch (signal) {
    case "SIGKILL":
      return 9;
    case "SIGTERM":
      return 15;
    case "SIGINT":
      return 2;
    default:
      return 0;
  }
}

// Raw JSON requests to the API server through a KubeConfig (its TLS material, tokens, exec plugins). Objects travel
// exactly as the API server sends them: client-node's typed (de)serialisers would turn timestamps into Dates and
// drop fields their models do not know, which a migration must never do.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { RequestOptions } from "node:https";
import { ApiException } from "@kubernetes/client-node";
import type { KubeConfig } from "@kubernetes/client-node";
import { TheseusError } from "../common/index.js";
import { kubeError } from "./errors.js";

export type HttpMethod = "GET" | "POST" | "PATCH" | "PUT" | "DELETE";

export interface KubeRequest {
  readonly method?: HttpMethod;
  /** Absolute API path, e.g. /apis/apps/v1/namespaces/shop/deployments. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string | undefined>>;
  readonly body?: unknown;
  readonly contentType?: string;
  /** Names the operation in errors ("list deployments.apps in shop"). */
  readonly what: string;
  readonly signal?: AbortSignal | undefined;
}

export interface KubeRest {
  readonly kubeConfig: KubeConfig;
  /** The parsed JSON body of a 2xx answer; anything else throws a TheseusError (kubeError). */
  json<T>(request: KubeRequest): Promise<T>;
}

const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

export function createKubeRest(kubeConfig: KubeConfig): KubeRest {
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) {
    throw new TheseusError("invalid_argument", "the kubeconfig has no current cluster", { hint: "set current-context in the kubeconfig" });
  }
  const server = cluster.server.replace(/\/+$/, "");
  return {
    kubeConfig,
    async json<T>(req: KubeRequest): Promise<T> {
      const url = new URL(server + req.path);
      for (const [key, value] of Object.entries(req.query ?? {})) if (value !== undefined) url.searchParams.set(key, value);
      const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
      const options: RequestOptions = {
        method: req.method ?? "GET",
        headers: {
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": req.contentType ?? "application/json", "content-length": String(body.length) }),
        },
      };
      try {
        await kubeConfig.applyToHTTPSOptions(options);
        return JSON.parse(await send(url, options, body, req.signal)) as T;
      } catch (error) {
        throw kubeError(error, req.what);
      }
    },
  };
}

function send(url: URL, options: RequestOptions, body: Buffer | undefined, signal: AbortSignal | undefined): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    // Our own abort listener, removed as soon as the request settles: node's `signal` option keeps one per request
    // until the socket closes, and one call's signal serves many requests.
    const onAbort = (): void => {
      request.destroy(signal?.reason instanceof Error ? signal.reason : new DOMException("the request was aborted", "AbortError"));
    };
    const settle = (error: Error | undefined, text?: string): void => {
      signal?.removeEventListener("abort", onAbort);
      if (error === undefined) resolve(text ?? "");
      else reject(error);
    };
    const request = (url.protocol === "http:" ? httpRequest : httpsRequest)(url, options, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) response.destroy(new TheseusError("resource_exhausted", `the API server's answer to ${url.pathname} exceeds ${MAX_RESPONSE_BYTES} bytes`));
        else chunks.push(chunk);
      });
      response.on("error", settle);
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const status = response.statusCode ?? 0;
        if (status >= 200 && status < 300) settle(undefined, text);
        else settle(new ApiException(status, `HTTP ${status}`, text, flatHeaders(response.headers)));
      });
    });
    if (signal?.aborted === true) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    request.on("error", settle);
    request.end(body);
  });
}

function flatHeaders(headers: NodeJS.Dict<string | string[]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) if (value !== undefined) out[key] = Array.isArray(value) ? value.join(", ") : value;
  return out;
}

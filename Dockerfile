# syntax=docker/dockerfile:1
# The Theseus agent image (charts/theseus-agent runs it; `theseus-agent hold` and the mover mode use the same image).
# Two stages: the build stage compiles TypeScript and then prunes to production dependencies; the runtime stage is
# distroless (no shell, no package manager) and holds only dist/ and those node_modules, run as a non-root user.

FROM node:20-bookworm-slim AS build
WORKDIR /src
# zstd-napi builds its native addon when no prebuilt one fits; the toolchain stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first, so that a source change does not reinstall them. The block-fingerprint addon is a dependency
# built from our own source (agent/sync/fingerprints), so it comes in with them.
COPY package.json package-lock.json ./
COPY agent/sync/fingerprints ./agent/sync/fingerprints
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto/gen ./proto/gen
COPY common ./common
COPY rpc ./rpc
COPY kube ./kube
COPY app-model ./app-model
COPY agent ./agent
COPY coordinator ./coordinator
COPY local-clusters ./local-clusters
# node_modules links the block-hash addon's package to agent/sync/fingerprints: put the package itself there (its
# loader and the binary npm ci built, not its sources), so that the runtime stage needs node_modules alone.
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm node_modules/theseus-block-fingerprints \
 && mkdir -p node_modules/theseus-block-fingerprints/build/Release \
 && cp agent/sync/fingerprints/package.json agent/sync/fingerprints/index.cjs node_modules/theseus-block-fingerprints/ \
 && cp agent/sync/fingerprints/build/Release/fingerprints.node node_modules/theseus-block-fingerprints/build/Release/

FROM gcr.io/distroless/nodejs20-debian12:nonroot AS runtime
WORKDIR /app
ENV NODE_ENV=production
# An 8 MiB young generation, as the agents of sync-dirs and the local clusters run (coordinator/demo/agent-process.ts
# says what 2 MiB cost); the chart's agent.nodeOptions sets the same and adds the old-space cap that matches its
# memory limit.
ENV NODE_OPTIONS=--max-semi-space-size=8
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# distroless's nonroot user: numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# gRPC (mTLS) and the plain HTTP health and metrics port, as in the chart's values.
EXPOSE 7443 8080
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/agent/main.js"]

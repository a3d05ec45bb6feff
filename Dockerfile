# One image for every Trellis app. The default command starts the API; compose (or `docker run trellis <cmd>`)
# picks another app with e.g. `npm run start:worker`, or runs `npm run migrate`.

# Only the package manifests, so `npm ci` below stays cached until a dependency changes.
FROM node:20-bookworm-slim AS manifests
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs ./libs
COPY apps ./apps
RUN find libs apps -type f ! -name package.json -delete

FROM node:20-bookworm-slim
# npm runs a script through `<shell> -c`. With dash, SIGTERM kills the intermediate shell and never reaches the
# app, so it could not shut down gracefully; bash execs a lone command, so SIGTERM goes npm -> tsx -> the app.
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_SCRIPT_SHELL=/bin/bash
WORKDIR /app
COPY --from=manifests /app ./
# Runtime dependencies only: the apps run from TypeScript source with tsx, which is one of them.
RUN npm ci --omit=dev && npm cache clean --force
# Source stays owned by root: the apps only read it.
COPY . .
USER node
EXPOSE 50051 50052 3000 9464 9465 9466 9467
CMD ["npm", "run", "start:api"]

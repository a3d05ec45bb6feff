export {
  DEFAULT_PLAN_TASKS,
  EXAMPLE_CAPABILITIES,
  type ExampleCapability,
  executeExample,
  isExampleCapability,
  MAX_PLAN_TASKS,
  MAX_REPORTED_TOKENS,
  MAX_SLEEP_MS,
  MAX_THROTTLED_ATTEMPTS,
  METERED_USD_PER_TOKEN,
  MOCK_MODEL,
  mockCompletion,
} from "./capabilities.js";
export {
  DEFAULT_EXAMPLE_NODE_SERVICE_HTTP_ADDR,
  DEFAULT_NODE_SERVICE_LISTEN_ADDR,
  type ExampleNodeServiceConfig,
  readExampleNodeServiceConfig,
} from "./config.js";
export {
  type ExampleNodeServiceOptions,
  MAX_RECEIVE_MESSAGE_BYTES,
  type RunningExampleNodeService,
  startExampleNodeService,
} from "./server.js";

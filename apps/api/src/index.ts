export { HEALTH_PATH_PREFIX, createAuthInterceptor, isAuthorized } from "./auth.js";
export { type GrpcCallMetrics, createCallObserver, createGrpcCallMetrics } from "./call-observer.js";
export {
  type ApiSettings,
  type ApiTlsSettings,
  DEFAULT_API_HTTP_ADDR,
  DEFAULT_GRPC_ADDR,
  DEFAULT_MAX_RECEIVE_BYTES,
  type ReadSettingFile,
  loadApiSettings,
  readApiSettings,
} from "./config.js";
export { deadlinePassed } from "./deadline.js";
export { type CallError, grpcStatusOf, toCallError } from "./errors.js";
export { HealthServiceDesc } from "./health-descriptor.js";
export {
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
  type WorkflowServiceDeps,
  type WorkflowServiceMethods,
  type WorkflowEventSource,
  createWorkflowServiceHandlers,
  pageSizeOf,
  workflowServiceMethods,
  workflowUpdateOf,
} from "./handlers.js";
export {
  type ReflectionPackageDefinition,
  createReflectionService,
  reflectionPackageDefinition,
} from "./reflection.js";
export { type ApiServerSettings, type RunningApiServer, type StartApiServerOptions, startApiServer } from "./server.js";
export {
  LEGACY_TOKEN_NAME,
  type TokenEntry,
  TokenFileError,
  TokenRegistry,
  type TokenRole,
  isScoped,
  parseTokenFile,
  roleAllows,
  tokenSha256,
  watchTokenFile,
} from "./tokens.js";

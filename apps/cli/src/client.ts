import { type CallOptions, TrellisClient, type WorkflowEventSource } from "@trellis/client";

/** The api as the commands see it: the Trellis client, with the caller's token on every call. */
export interface ApiConnection {
  client: TrellisClient;
  /** Options of a unary call: the client's deadline, and `signal` when given. */
  call(signal?: AbortSignal): CallOptions;
  /** WatchWorkflow and GetWorkflow as a {@link WorkflowEventSource}, for a resuming watch. */
  events: WorkflowEventSource;
  close(): void;
}

/** Connects (lazily, as grpc-js does) to the api at `addr`, sending `authorization: Bearer <token>` when given. */
export function connect(addr: string, token: string | undefined): ApiConnection {
  const client = new TrellisClient({ address: addr, ...(token ? { token } : {}) });
  return {
    client,
    call: (signal) => (signal === undefined ? {} : { signal }),
    events: client.events,
    close: () => client.close(),
  };
}

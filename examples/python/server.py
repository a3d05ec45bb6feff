"""A Trellis NodeService in Python, generated from the protos: serves py.echo, py.upper and py.sleep.

    python3 server.py [--listen 0.0.0.0:50052] [--generated DIR]

Without --generated, the protobuf and gRPC code is generated at start (generate.py) into a temporary
directory removed at exit. Prints `listening on HOST:PORT` once it serves. SIGTERM or SIGINT: stops
taking calls and lets the ones running finish for up to NODE_SERVICE_SHUTDOWN_GRACE_S seconds (10).
"""

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

from generate import generate

log = logging.getLogger("py-node-service")


class TaskError(Exception):
    """The input or the task itself is wrong: the node fails at once (no retry unless its policy says so)."""


class InfraError(Exception):
    """Something outside the task failed (a provider's 5xx, the network): the node is retried with backoff."""


class Context:
    """What a handler knows of its node's run besides the input, and where it reports usage."""

    def __init__(self, request, grpc_context, json_format):
        ctx = request.context
        self.workflow_id = ctx.workflow_id
        self.node_id = request.node.id
        self.capability = request.node.capability
        self.attempt = ctx.attempt
        # The same for every attempt of the node: use it to make side effects idempotent.
        self.idempotency_key = ctx.idempotency_key
        self.workflow_input = json_format.MessageToDict(ctx.workflow_input)
        self.parent_outputs = {k: json_format.MessageToDict(v) for k, v in ctx.parent_outputs.items()}
        self.usage = {}
        self._grpc = grpc_context
        # Set when the call ends early: the worker cancelled it (node cancelled, lease lost) or its deadline passed.
        self.cancelled = threading.Event()
        grpc_context.add_callback(self.cancelled.set)

    def time_remaining(self):
        """Seconds left before the attempt's deadline (the node's timeout), or None without one."""
        return self._grpc.time_remaining()

    def report_usage(self, **amounts):
        """Adds what this attempt spent, e.g. report_usage(tokens=120): limits and budgets count it."""
        for unit, amount in amounts.items():
            self.usage[unit] = self.usage.get(unit, 0.0) + float(amount)


def py_echo(node_input, ctx):
    """Answers its input and its parents' outputs."""
    ctx.report_usage(calls=1)
    return {"input": node_input, "parents": ctx.parent_outputs, "attempt": ctx.attempt}


def py_upper(node_input, ctx):
    """Upper-cases input.text; anything but a string there is a TASK_ERROR."""
    text = node_input.get("text")
    if not isinstance(text, str):
        raise TaskError('py.upper needs input.text, a string, e.g. {"text": "hello"}')
    ctx.report_usage(chars=len(text))
    return {"text": text.upper()}


def py_sleep(node_input, ctx):
    """Sleeps input.ms milliseconds, stopping early when the call is cancelled or its deadline comes."""
    ms = node_input.get("ms", 0)
    if not isinstance(ms, (int, float)) or ms < 0:
        raise TaskError("py.sleep needs input.ms, a number >= 0")
    wait = ms / 1000
    remaining = ctx.time_remaining()
    if remaining is not None and remaining < wait:
        # Sleeping past the deadline is pointless: nobody waits for the answer then.
        ctx.cancelled.wait(remaining)
        log.info("py.sleep %s: stopped early, cancelled or at the deadline", ctx.idempotency_key)
        raise InfraError("deadline passed")
    if ctx.cancelled.wait(wait):
        # The worker cancelled the call: a real handler stops its work here.
        log.info("py.sleep %s: stopped early, the call was cancelled", ctx.idempotency_key)
        raise InfraError("cancelled")
    return {"slept_ms": ms}


HANDLERS = {"py.echo": py_echo, "py.upper": py_upper, "py.sleep": py_sleep}


def make_servicer(pb2, pb2_grpc, json_format):
    """A NodeService whose ExecuteNode calls the handler of the node's capability with plain JSON."""

    class NodeService(pb2_grpc.NodeServiceServicer):
        # ExecuteNodeStream is left to the generated base class, which answers UNIMPLEMENTED: the worker then
        # calls ExecuteNode (and remembers it for this address).

        def ExecuteNode(self, request, context):
            started = time.monotonic()
            ctx = Context(request, context, json_format)
            response = pb2.ExecuteNodeResponse()
            handler = HANDLERS.get(ctx.capability)
            try:
                if handler is None:
                    raise TaskError(f'unknown capability "{ctx.capability}"')
                output = handler(json_format.MessageToDict(request.node.input), ctx)
                try:
                    json_format.ParseDict(output, response.output)
                except (json_format.ParseError, TypeError, ValueError) as e:
                    raise TaskError(f"{ctx.capability} returned what is not JSON: {e}") from e
                response.status = pb2.EXECUTION_STATUS_SUCCESS
            except TaskError as e:
                response.Clear()
                response.status = pb2.EXECUTION_STATUS_TASK_ERROR
                response.error_message = str(e)
            except InfraError as e:
                response.Clear()
                response.status = pb2.EXECUTION_STATUS_INFRA_ERROR
                response.error_message = str(e)
            except Exception as e:  # a bug in the handler: running it again would not fix it (as in the TS SDK)
                log.exception("%s failed", ctx.capability)
                response.Clear()
                response.status = pb2.EXECUTION_STATUS_TASK_ERROR
                response.error_message = f"{type(e).__name__}: {e}"
            for unit, amount in ctx.usage.items():
                response.usage[unit] = amount
            log.info(
                "%s %s attempt %d: %s in %.0f ms",
                ctx.capability,
                ctx.idempotency_key,
                ctx.attempt,
                pb2.ExecutionStatus.Name(response.status),
                (time.monotonic() - started) * 1000,
            )
            return response

    return NodeService()


def main():
    parser = argparse.ArgumentParser(description="A Trellis NodeService in Python (py.echo, py.upper, py.sleep).")
    parser.add_argument("--listen", default=os.environ.get("NODE_SERVICE_LISTEN_ADDR", "0.0.0.0:50052"))
    parser.add_argument("--generated", help="directory of code generate.py wrote (default: generate it now)")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(), format="%(asctime)s %(levelname)s %(message)s")

    temporary = None
    generated = args.generated
    if generated is None:
        temporary = generated = tempfile.mkdtemp(prefix="trellis-python-gen-")
        generate(generated)
    sys.path.insert(0, generated)
    try:
        import grpc
        from google.protobuf import json_format
        from workflow.v1 import node_service_pb2, node_service_pb2_grpc

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=int(os.environ.get("NODE_SERVICE_THREADS", "16"))),
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        node_service_pb2_grpc.add_NodeServiceServicer_to_server(
            make_servicer(node_service_pb2, node_service_pb2_grpc, json_format), server
        )
        port = server.add_insecure_port(args.listen)
        if port == 0:
            sys.exit(f"py-node-service: cannot listen on {args.listen}")
        server.start()
        host = args.listen.rsplit(":", 1)[0]
        print(f"listening on {host}:{port} ({', '.join(sorted(HANDLERS))})", flush=True)

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
        grace = float(os.environ.get("NODE_SERVICE_SHUTDOWN_GRACE_S", "10"))
        log.info("stopping: running calls have %.1f s to finish", grace)
        server.stop(grace).wait()
        log.info("stopped")
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()

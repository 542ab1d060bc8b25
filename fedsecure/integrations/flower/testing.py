"""An in-process Flower ``Grid`` for tests and benchmarks: real Messages, real ClientApps, no network.

:class:`InProcessGrid` hands each message to its node's real ``ClientApp``
(with its mods and its own persistent ``Context``), one deep copy per
delivery as a network would make. Hooks let a test play the network badly:
``drop(node_id, message) -> bool`` silences a node from that message on, and
``tamper(node_id, reply) -> list[Message]`` replaces a reply by any list of
messages (none, a corrupted one, duplicates, a replay of an older reply).
Flower's simulation runtime (Ray) and deployment runtime
(SuperLink + SuperNodes) drive the same mods and workflows; see the tests.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable

from flwr.app import Context, Message, RecordDict
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    def __init__(self, app, node_ids, *, drop: Callable[[int, Message], bool] | None = None,
                 tamper: Callable[[int, Message], list[Message]] | None = None, node_config=None) -> None:
        self.app, self.node_ids = app, list(node_ids)
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config=dict(node_config or {}), state=RecordDict(),
                                      run_config={}) for nid in self.node_ids}
        self.drop, self.tamper = drop, tamper
        self.dead: set[int] = set()
        self.bytes_down: dict[int, int] = {}

    def set_run(self, run_id):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):  # noqa: D102
        return self.node_ids

    def push_messages(self, messages):  # noqa: D102
        raise NotImplementedError("InProcessGrid delivers synchronously through send_and_receive")

    def pull_messages(self, message_ids):  # noqa: D102
        raise NotImplementedError("InProcessGrid delivers synchronously through send_and_receive")

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if nid in self.dead or (self.drop is not None and self.drop(nid, msg)):
                self.dead.add(nid)  # a dropped node never answers again
                continue
            msg = copy.deepcopy(msg)
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            TaskIdentity.node_id = nid
            try:
                reply = self.app(msg, self.contexts[nid])
            finally:
                TaskIdentity.node_id = 0
            replies += self.tamper(nid, reply) if self.tamper is not None else [reply]
        return replies


def legacy_context(strategy, grid: Grid, init_arrays, *, current_round: int = 1):
    """A ``LegacyContext`` as ``DefaultWorkflow`` builds it: the grid's nodes registered, initial parameters, round."""
    from flwr.app import ConfigRecord
    from flwr.common import ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    ctx = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                        strategy=strategy)
    for nid in grid.get_node_ids():
        ctx.client_manager.register(GridClientProxy(nid, grid, 1))
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(list(init_arrays)), keep_input=True)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: current_round})
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return ctx


def current_arrays(ctx):
    """The ServerApp's current global parameters (after a round) as numpy arrays."""
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD],
                                                                    keep_input=True))

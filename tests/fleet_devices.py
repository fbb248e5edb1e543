"""Real devices for fleet tests: runtime, update manager, sync client and reporter."""

from __future__ import annotations

from edgecl.device import (
    DeviceReporter,
    DeviceRuntime,
    Outbox,
    SyncClient,
    UpdateManager,
    UpdateVerifier,
)
from tests.cloud.conftest import KEY


class Device:
    """One real device: runtime, update manager, sync client, reporter; applies desired
    config by remembering it (what an agent would hand its sampler)."""

    def __init__(self, bundle, target, public_key, device_id, tmp, group):
        self.id = device_id
        self.rt = DeviceRuntime.open(bundle, threads=1, share_session=True)
        self.manager = UpdateManager(self.rt, UpdateVerifier(public_key))
        self.outbox = Outbox(tmp / f"{device_id}.db")
        self.client = SyncClient(self.outbox, target, device_id=device_id,
                                 enrollment_key=KEY, encoder_sha256=self.rt.bundle.encoder_sha256,
                                 group=group, on_update=self.manager, poll_s=0.02)
        self.applied_config: dict[str, str] = {}
        self.reporter = DeviceReporter(self.client, self.rt, manager=self.manager,
                                       outbox=self.outbox, interval_s=30.0,
                                       apply_config=self._apply)
        self.x = self.rt.bundle.probe_inputs()[:32]

    def _apply(self, values):
        self.applied_config = dict(values)
        return {k: v for k, v in values.items() if k == "budget"}

    def predict(self):
        pred = self.rt.predict(self.x)
        self.manager.observe(self.x, pred)
        self.reporter.observe(pred)

    @property
    def version(self):
        return self.manager.cloud_version

    def seen(self, version):
        return any(e.cloud_version == version for e in self.manager.events)

    def close(self):
        self.reporter.stop(final_report=False)
        self.client.stop()
        self.outbox.close()

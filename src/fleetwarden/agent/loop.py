"""The agent: one synchronous loop that enrolls, polls, and carries out one assignment at a time.

Crash safety (the reason this file is shaped as it is; the step table is ``core.job``):
  1. Every step is journalled *before* its work starts; a restart resumes at the journalled
     step. Steps other than INSTALLING are idempotent, so resuming simply repeats them.
  2. A restart that finds INSTALLING means installers may have stopped half-way: the agent
     rolls back (installers promise rollback is safe at any point) and reports rolled_back
     (``core.job.resume``).
  3. The state reported for a step is sent before that step's work and is recorded in the
     journal once the server acknowledged it, so a report is re-sent after a crash, never
     skipped; the server treats repeats as no-ops.
  4. "installing" is acknowledged by the server before anything changes on the device: the
     server's answer is the last chance to learn of a cancellation (409 → abandon the job).
  5. A job ends (journal cleared) only after its final state was acknowledged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from fleetwarden import errors
from fleetwarden.agent import crashpoint
from fleetwarden.agent.client import DeviceClient, sha256_file
from fleetwarden.agent.config import AgentConfig
from fleetwarden.agent.health import HealthChecker
from fleetwarden.agent.identity import Identity, IdentityStore, make_csr
from fleetwarden.agent.installers import InstallContext, Installer, Payload
from fleetwarden.agent.journal import Job, Journal
from fleetwarden.agent.store import Store
from fleetwarden.agent.trust import TufTrust
from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.certificates import should_renew
from fleetwarden.core.inventory import fingerprint
from fleetwarden.core.job import ABANDONABLE, FINAL, REPORT_BEFORE, Outcome, Step, next_step, resume
from fleetwarden.core.tuf_rules import TrustedArtifact
from fleetwarden.protocol.device import EnrollRequest, Inventory, ReenrollRequest, StatusReport

__all__ = ["Agent", "InventorySource", "run_forever"]

T = TypeVar("T")

log = logging.getLogger("fleetwarden.agent")

InventorySource = Callable[[str], Inventory]  # installed release → inventory

_MAX_DOWNLOAD_ATTEMPTS = 3
_RELOGIN_MARGIN = timedelta(minutes=2)
_REFUSED_RETRY = 900.0
_LEAN_MIN_DELAY = 2.0
_LEAN_RENEW_MARGIN = timedelta(minutes=5)
_RENEW_RETRY = timedelta(hours=1)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        client: DeviceClient,
        store: Store,
        installers: Mapping[str, Installer],
        inventory: InventorySource,
        health: HealthChecker,
        rng: random.Random | None = None,
        reboot: Callable[[], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.identity_store = IdentityStore(store)
        self.journal = Journal(store)
        self.installers = installers
        self.collect_inventory = inventory
        self.health = health
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.reboot = reboot or self._reboot_command
        self.identity: Identity | None = None
        #: Wall clock for certificate and session lifetimes (tests pass a frozen one).
        self.clock = clock or (lambda: datetime.now(UTC))
        self._renew_retry_at: datetime | None = None
        self.etag: str | None = None
        self.poll_interval = config.poll_interval or 300.0
        self.server_fingerprint: str | None = None
        self.next_inventory = 0.0
        self.failures = 0
        self._resumed = False
        self._hardware_model: str | None = None
        self.trust = TufTrust(client.http, config.server, config.data_dir / "tuf")

    def __repr__(self) -> str:
        who = self.identity.device_id if self.identity else "not enrolled"
        return f"<Agent {who} via {self.client!r}>"

    # -- the loop ----------------------------------------------------------------------------
    def run_once(self) -> float:
        """Do one bounded piece of work; return the seconds to wait before the next call."""
        try:
            delay = self._work()
        except errors.Deferred as e:
            # Outside the device's maintenance window: keep the job, ask again later (capped
            # at the poll interval so a change of plan on the server is noticed).
            delay = min(e.retry_after, self.poll_interval)
            log.info("install deferred by the server (%s); asking again in %.0fs", e, delay)
            return delay
        except errors.TransportError as e:
            self.failures += 1
            delay = min(300.0, 2.0 ** min(self.failures, 9)) * (0.5 + self.rng.random())
            log.warning("server unreachable (%s); retrying in %.0fs", e, delay)
            return delay
        except errors.AuthError as e:
            self.client.token = None
            log.error(  # noqa: TRY400 - an expected refusal needs no traceback
                "the server refused this device (%s); retrying in %.0fs", e, _REFUSED_RETRY
            )
            return _REFUSED_RETRY
        except errors.ConfigError:
            raise
        except errors.FleetwardenError as e:
            # Anything else the server or a step refused: never end the agent over it (the
            # job's state is journalled); back off and try again.
            self.failures += 1
            delay = min(300.0, 2.0 ** min(self.failures, 9))
            log.error("unexpected error (%s); retrying in %.0fs", e, delay)  # noqa: TRY400
            return delay
        self.failures = 0
        return delay

    def _work(self) -> float:
        self._ensure_session()
        job = self.journal.load()
        if job is not None:
            if not self._resumed:
                job = self._resume(job)
            self._resumed = True
            self._advance(job)
            return 0.0
        self._resumed = True
        result = self._call(lambda: self.client.poll(self.etag))
        if result.response is not None:
            self.etag = result.etag
            self.server_fingerprint = result.response.inventory_fingerprint
            if self.config.poll_interval is None:
                self.poll_interval = float(result.response.poll_interval_seconds)
            action = result.response.action
            if action is not None:
                log.info(
                    "received assignment %d: %s@%s",
                    action.assignment_id,
                    action.release_name,
                    action.release_version,
                )
                job = Job(action=action.model_dump(mode="json"))
                if action.state is not AssignmentState.PENDING:
                    # Only after a lost journal: start over, the server ignores stale reports.
                    job.reported = action.state.value
                self._save(job)
                return 0.0
        self._maybe_send_inventory()
        jitter = 1 + self.config.jitter * (2 * self.rng.random() - 1)
        return self.poll_interval * jitter

    def _call(self, fn: Callable[[], T]) -> T:
        """Call the server; on an expired session, open a new one and retry once."""
        try:
            return fn()
        except errors.AuthenticationError:
            self.client.token = None
            self._ensure_session()
            return fn()

    def idle_handoff(self, delay: float, argv: list[str]) -> dict[str, Any] | None:
        """What the lean poller needs, if the agent may go lean now (fleetwarden.agent.lean):
        nothing in the journal, an ETag to poll with, and no session renewal or inventory due
        for at least a minute."""
        token, expires = self.client.token, self.client.token_expires
        if delay < _LEAN_MIN_DELAY or self.etag is None or not token or expires is None:
            return None
        if self.journal.load() is not None:
            return None
        now = datetime.now(UTC)
        inventory_at = now + timedelta(seconds=max(0.0, self.next_inventory - time.monotonic()))
        wake = min(expires - _LEAN_RENEW_MARGIN, inventory_at)
        if wake - now < timedelta(minutes=1):
            return None
        return {
            "server": self.config.server,
            "ca_file": str(self.config.server_ca_file) if self.config.server_ca_file else None,
            "token": token,
            "etag": self.etag,
            "poll_interval": self.poll_interval,
            "jitter": self.config.jitter,
            "wake_full_at": wake.timestamp(),
            "argv": argv,
        }

    # -- identity ----------------------------------------------------------------------------
    def _ensure_session(self) -> None:
        if self.identity is None:
            self.identity = self.identity_store.load() or self._enroll()
        expires = self.client.token_expires
        if not (self.client.token and expires and expires - self.clock() > _RELOGIN_MARGIN):
            self.client.open_session(
                self.identity.device_id, self.identity.certificate_pem, self.identity.sign_challenge
            )
        self._maybe_renew(self.identity)

    def _maybe_renew(self, identity: Identity) -> None:
        """Renew the certificate when too little of its lifetime is left (core.certificates),
        crash-safely (agent.identity), then open a session with the new one, which makes it
        the device's current certificate on the server."""
        now = self.clock()
        cert = identity.certificate
        if (self._renew_retry_at is not None and now < self._renew_retry_at) or not should_renew(
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            now=now,
            fraction=self.config.renew_fraction,
        ):
            return
        key = self.identity_store.next_key()
        try:
            answer = self.client.reenroll(ReenrollRequest(csr=make_csr(key, identity.device_id)))
            renewed = _renewed(identity, key, answer.certificate, answer.ca_certificates)
        except (errors.InputError, errors.VerificationError, errors.ConflictError) as e:
            # Refused: keep the current certificate and ask again later, not on every poll.
            self._renew_retry_at = now + _RENEW_RETRY
            log.warning("certificate renewal refused (%s); retrying in %s", e, _RENEW_RETRY)
            return
        self.identity_store.save_renewed(renewed)
        self.identity = renewed
        self.client.token = None
        self.client.open_session(renewed.device_id, renewed.certificate_pem, renewed.sign_challenge)
        log.info(
            "renewed the device certificate; valid until %s",
            renewed.certificate.not_valid_after_utc,
        )

    def _enroll(self) -> Identity:
        token = self.config.enroll_token
        if not token:
            raise errors.ConfigError(
                "this device is not enrolled and no enrollment token is configured"
            )
        key = self.identity_store.pending_key()
        hostname = self.collect_inventory(self._installed_release()).hostname
        answer = self.client.enroll(
            EnrollRequest(enrollment_token=token, csr=make_csr(key, hostname), hostname=hostname)
        )
        identity = Identity(answer.device_id, key, answer.certificate, answer.ca_certificates[0])
        if answer.tuf_roots:
            self.trust.install_roots(answer.tuf_roots)
        self.identity_store.save(identity)
        log.info("enrolled as %s", answer.device_id)
        return identity

    # -- inventory ---------------------------------------------------------------------------
    def _installed_release(self) -> str:
        data = self.store.read("state.json")
        return json.loads(data).get("installed_release", "") if data else ""

    def _maybe_send_inventory(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_inventory:
            return
        inventory = self.collect_inventory(self._installed_release())
        self.next_inventory = now + self.config.inventory_interval
        if fingerprint(inventory.model_dump(mode="json")) == self.server_fingerprint:
            return
        ack = self._call(lambda: self.client.put_inventory(inventory))
        self.server_fingerprint = ack.fingerprint

    # -- the job state machine ----------------------------------------------------------------
    def _save(self, job: Job) -> None:
        crashpoint.hit(f"journal.{job.step.value}")
        self.journal.save(job)
        crashpoint.hit(f"journalled.{job.step.value}")
        if self.config.hold_at_step == job.step.value:
            print(
                f"fleetwarden-agent: holding at step {job.step.value}", file=sys.stderr, flush=True
            )
            threading.Event().wait()  # until killed: crash-safety tests kill -9 us here

    def _goto(self, job: Job, step: Step, detail: str | None = None) -> None:
        job.step = step
        if detail is not None:
            job.detail = detail
        self._save(job)

    def _then(self, job: Job, outcome: Outcome, detail: str | None = None) -> None:
        """End the current step with ``outcome``; journal the step the table names next."""
        self._goto(job, next_step(job.step, outcome), detail)

    def _resume(self, job: Job) -> Job:
        """First look at a journal after start (rule 2)."""
        step = resume(job.step, reboot_requested=job.reboot_requested)
        if step is Step.ROLLING_BACK and job.step is Step.INSTALLING:
            log.warning(
                "restarted during installation of assignment %d: rolling back",
                job.assignment.assignment_id,
            )
            self._goto(job, step, "agent restarted while installing; rolled back")
        elif step is not job.step:
            self._goto(job, step)
        return job

    def _advance(self, job: Job) -> None:
        want = REPORT_BEFORE.get(job.step)
        if want is not None and job.reported != want.value:
            try:
                if not self._report(job, want):
                    return
            except errors.TransportError:
                if not self._out_of_reach(job):
                    raise
                return
        handler = getattr(self, f"_do_{job.step.value}")
        handler(job)

    def _out_of_reach(self, job: Job) -> bool:
        """After an install's reboot the device must reach the server within
        ``reach_server_within`` seconds, or it rolls back on its own (a new image that boots
        but cannot talk to us is as bad as one that does not boot)."""
        limit = self.config.reach_server_within
        if job.step is not Step.VERIFYING or job.rebooted_at is None:
            return False
        waited = self.clock().timestamp() - job.rebooted_at
        if waited < limit:
            return False
        log.error("no contact with the server %.0fs after the reboot: rolling back", waited)
        self._then(
            job, Outcome.FAILED, f"did not reach the server within {limit:.0f}s of the reboot"
        )
        return True

    def _report(self, job: Job, state: AssignmentState) -> bool:
        """Send the step's report; False if the job was abandoned because of a 409."""
        action = job.assignment
        try:
            self._call(
                lambda: self.client.report(
                    action.assignment_id, StatusReport(state=state, detail=job.detail[:4096])
                )
            )
        except (errors.IllegalTransition, errors.NotFoundError) as e:
            if job.step in ABANDONABLE:
                log.warning(
                    "assignment %d withdrawn by the server (%s): abandoning",
                    action.assignment_id,
                    e,
                )
                self._finish(job)
                return False
            if job.step in FINAL:
                # The server already closed it (e.g. timed it out); our outcome stands locally.
                log.warning("server refused final report for %d: %s", action.assignment_id, e)
            else:
                log.warning(
                    "server refused %s for %d (%s); carrying on",
                    state.value,
                    action.assignment_id,
                    e,
                )
        job.reported = state.value
        self._save(job)
        return True

    def _paths(self, job: Job) -> tuple[Path, Path]:
        base = self.config.data_dir
        return base / "downloads", base / "work" / str(job.assignment.assignment_id)

    def _parts(self, job: Job) -> list[tuple[str, Installer, InstallContext]]:
        """The release's artifacts grouped by type, each group with its installer, in order."""
        action = job.assignment
        downloads, workdir = self._paths(job)
        groups: dict[str, list[Payload]] = {}
        for ref in action.artifacts:
            groups.setdefault(ref.type, []).append(Payload(ref, downloads / ref.sha256))
        parts = []
        for kind, payloads in groups.items():
            installer = self.installers.get(kind) or self.installers.get("*")
            if installer is None:
                raise errors.InstallError(f"this agent has no installer for {kind!r} artifacts")
            parts.append(
                (
                    kind,
                    installer,
                    InstallContext(
                        assignment_id=action.assignment_id,
                        release=f"{action.release_name}@{action.release_version}",
                        payloads=payloads,
                        workdir=workdir,
                        state_dir=self.config.data_dir / "installers" / kind,
                        root=self.config.root,
                    ),
                )
            )
        return parts

    def _do_received(self, job: Job) -> None:
        """Verify the assignment against both TUF repositories before anything else; the
        verified length and sha256 replace what the poll said (which only the server vouches
        for). A refusal fails the assignment with the rule's reason and changes nothing."""
        if not job.trusted:
            assert self.identity is not None  # noqa: S101 - a job exists only after enrollment
            try:
                trusted = self.trust.verify(
                    job.assignment, device_id=self.identity.device_id, model=self._model()
                )
            except errors.TrustError as e:
                log.error("assignment %d refused: %s", job.assignment.assignment_id, e)  # noqa: TRY400
                self._then(job, Outcome.FAILED, f"refused: {e}")
                return
            job.trusted = [dataclasses.asdict(t) for t in trusted]
            for ref, t in zip(job.action["artifacts"], trusted, strict=True):
                ref["sha256"], ref["size"] = t.sha256, t.length
            self._save(job)
        self._then(job, Outcome.OK)

    def _model(self) -> str:
        if self.config.hardware_model is not None:
            return self.config.hardware_model
        if self._hardware_model is None:
            self._hardware_model = self.collect_inventory(self._installed_release()).hardware_model
        return self._hardware_model

    def _do_downloading(self, job: Job) -> None:
        downloads, _ = self._paths(job)
        downloads.mkdir(parents=True, exist_ok=True)
        for ref in job.assignment.artifacts:
            dest = downloads / ref.sha256
            if dest.exists():
                continue
            try:
                self._call(
                    functools.partial(
                        self.client.download,
                        ref.url,
                        dest,
                        size=ref.size,
                        rate_limit=self.config.download_rate_limit,
                    )
                )
            except (errors.IntegrityError, errors.NotFoundError) as e:
                self._download_failed(job, f"{ref.name}: {e}")
                return
        self._then(job, Outcome.OK)

    def _download_failed(self, job: Job, reason: str) -> None:
        job.download_attempts += 1
        if job.download_attempts >= _MAX_DOWNLOAD_ATTEMPTS:
            self._then(
                job, Outcome.FAILED, f"download failed {job.download_attempts} times: {reason}"
            )
        else:
            self._then(job, Outcome.RETRY, reason)

    def _do_downloaded(self, job: Job) -> None:
        downloads, _ = self._paths(job)
        for ref in job.assignment.artifacts:
            path = downloads / ref.sha256
            actual = sha256_file(path) if path.exists() else "missing"
            if actual != ref.sha256:
                path.unlink(missing_ok=True)
                self._download_failed(
                    job, f"{ref.name}: sha256 {actual} does not match {ref.sha256}"
                )
                return
        self._then(job, Outcome.OK, "")

    def _do_verified(self, job: Job) -> None:
        try:
            parts = self._parts(job)
            for _, installer, ctx in parts:
                ctx.workdir.mkdir(parents=True, exist_ok=True)
                installer.preflight(ctx)
            job.snapshots = {kind: dict(installer.prepare(ctx)) for kind, installer, ctx in parts}
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, f"pre-flight: {e}")
            return
        self._then(job, Outcome.OK)

    def _env(self, job: Job) -> dict[str, str]:
        action = job.assignment
        return {
            "FLEETWARDEN_ROOT": str(self.config.root),
            "FLEETWARDEN_RELEASE": f"{action.release_name}@{action.release_version}",
            "FLEETWARDEN_ASSIGNMENT_ID": str(action.assignment_id),
        }

    def _post_hooks_best_effort(self, job: Job) -> None:
        """After a rollback or a failed drain: put the device back in service if we can."""
        if not job.assignment.post_install:
            return
        try:
            self.health.check(job.assignment.post_install, self._env(job))
        except errors.HealthCheckFailed as e:
            log.warning("post-install hook failed after an unsuccessful update: %s", e)

    def _do_prepared(self, job: Job) -> None:
        # The server acknowledged "installing" (rule 4): from here the device changes, after
        # the rollout's pre-install hooks (e.g. drain) succeeded.
        try:
            if job.assignment.pre_install:
                self.health.check(job.assignment.pre_install, self._env(job))
        except errors.HealthCheckFailed as e:
            self._post_hooks_best_effort(job)
            self._then(job, Outcome.FAILED, f"pre-install hook: {e}")
            return
        self._then(job, Outcome.OK)

    def _do_installing(self, job: Job) -> None:
        # Journalled as INSTALLING before any installer runs: a restart now rolls back (rule 2).
        try:
            for kind, installer, ctx in self._parts(job):
                result = installer.install(ctx, job.snapshots[kind])
                job.needs_reboot = job.needs_reboot or result.needs_reboot
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, f"install: {e}")
            return
        self._then(job, Outcome.REBOOT if job.needs_reboot else Outcome.OK)

    def _do_installed(self, job: Job) -> None:
        self._then(job, Outcome.REBOOT if job.needs_reboot else Outcome.OK)

    def _do_rebooting(self, job: Job) -> None:
        if job.reboot_requested:
            self._then(job, Outcome.OK)
            return
        job.reboot_requested = True
        job.rebooted_at = self.clock().timestamp()
        self._save(job)
        try:
            self.reboot()
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, f"reboot: {e}")

    def _reboot_command(self) -> None:
        from fleetwarden.agent.installers.base import run_command

        run_command(self.config.reboot_command, what="reboot")
        threading.Event().wait(600)  # the system is going down

    def _do_verifying(self, job: Job) -> None:
        action = job.assignment
        try:
            for kind, installer, ctx in self._parts(job):
                installer.verify_boot(ctx, job.snapshots[kind])
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, str(e))
            return
        try:
            self.health.check([*self.config.health_checks, *action.health_checks], self._env(job))
            if action.post_install:
                self.health.check(action.post_install, self._env(job))
        except errors.HealthCheckFailed as e:
            self._then(job, Outcome.FAILED, str(e))
            return
        self._then(job, Outcome.OK)

    def _do_committing(self, job: Job) -> None:
        try:
            for kind, installer, ctx in self._parts(job):
                installer.commit(ctx, job.snapshots[kind])
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, f"commit: {e}")
            return
        action = job.assignment
        self.store.write(
            "state.json",
            json.dumps(
                {"installed_release": f"{action.release_name}@{action.release_version}"}
            ).encode(),
        )
        self._then(job, Outcome.OK, "installed and healthy")

    def _do_rolling_back(self, job: Job) -> None:
        reboot = False
        try:
            for kind, installer, ctx in reversed(self._parts(job)):
                snapshot: Any = job.snapshots.get(kind)
                if snapshot is not None:
                    result = installer.rollback(ctx, snapshot)
                    reboot = reboot or bool(result and result.needs_reboot)
        except errors.InstallError as e:
            self._then(job, Outcome.FAILED, f"{job.detail}; rollback failed: {e}")
            return
        if reboot:
            # Rollback is idempotent: after this reboot it runs again and needs none.
            if job.rollback_reboot_requested:
                self._then(
                    job,
                    Outcome.FAILED,
                    f"{job.detail}; still on the new version after the rollback reboot",
                )
                return
            job.rollback_reboot_requested = True
            self._save(job)
            try:
                self.reboot()
            except errors.InstallError as e:
                self._then(job, Outcome.FAILED, f"{job.detail}; rollback reboot: {e}")
            return
        self._post_hooks_best_effort(job)
        self._then(job, Outcome.OK)

    def _do_committed(self, job: Job) -> None:
        self._finish(job)

    _do_rolled_back = _do_committed
    _do_failed = _do_committed

    def _finish(self, job: Job) -> None:
        downloads, workdir = self._paths(job)
        log.info(
            "assignment %d ended: %s %s", job.assignment.assignment_id, job.step.value, job.detail
        )
        if job.step is Step.COMMITTED and job.trusted:
            self.trust.record_installed(
                [TrustedArtifact(**t) for t in job.trusted],
                [ref.name for ref in job.assignment.artifacts],
            )
        self.journal.clear()
        shutil.rmtree(workdir, ignore_errors=True)
        for ref in job.assignment.artifacts:
            (downloads / ref.sha256).unlink(missing_ok=True)
            (downloads / f"{ref.sha256}.part").unlink(missing_ok=True)
        self.next_inventory = 0.0  # report the new state of the device soon
        self.etag = None


def _renewed(
    identity: Identity, key: ec.EllipticCurvePrivateKey, cert_pem: str, ca_pems: list[str]
) -> Identity:
    """The renewed identity, after checking the server certified the key we sent.

    Raises:
        VerificationError: the certificate does not parse or certifies another key.
    """
    renewed = Identity(identity.device_id, key, cert_pem, "".join(ca_pems))
    try:
        public_key = renewed.certificate.public_key()
    except ValueError as e:
        raise errors.VerificationError("server sent a certificate that does not parse") from e
    if public_key != key.public_key():
        raise errors.VerificationError("renewed certificate is not for the key we sent")
    return renewed


def run_forever(agent: Agent, stop: threading.Event) -> None:
    """Call ``run_once`` until ``stop`` is set; a configuration error ends the loop."""
    while not stop.is_set():
        delay = agent.run_once()
        if delay > 0:
            stop.wait(delay)

"""Release identity: the weights, not the version string.

A release's identity is a hash of its uid, its model URI and the digest of the model's weights
(``storage.model_digest``). Readiness, reuse (projections, adaptation outputs) and rollback are keyed by it,
so re-applying a version with other weights, or deleting and re-creating a release, re-adapts its adapters.

The digest is read off the event loop in the background (one read per release at most every
RELORA_MODEL_DIGEST_REFRESH_SECONDS) and recorded in the release's status (``modelDigest``), which is also
where a restarted operator finds it. A read that fails keeps the last known digest and is reported as the
release's ``StorageAvailable=False, reason=StorageUnavailable`` condition; a release whose digest was never
readable gets the empty digest (its identity is then its uid and URI), and its adapters are re-adapted once
the digest can be read, since they could not be shown to be trained on those weights.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from relora_operator import naming, storage
from relora_operator.settings import Settings
from relora_operator.views import ReleaseView

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCheck:
    """The last read of a release's model digest."""

    uri: str
    digest: str  # "" when unknown or the folder is empty
    error: str | None = None  # why the last read failed (StorageUnavailable), None when it succeeded
    at: float = 0.0  # time.monotonic() of the read; 0: taken from the release's status


def check_of(release: ReleaseView) -> ModelCheck | None:
    """What the release's status records of its model digest (for its current model URI), or None."""
    status = release.status
    if status.get("modelDigestUri") == release.model_uri and status.get("modelDigest") is not None:
        return ModelCheck(release.model_uri, str(status["modelDigest"]))
    return None


def identity_of(release: ReleaseView) -> str | None:
    """The release's identity, or None while its model digest has not been read yet."""
    check = check_of(release)
    if check is None:
        return None
    return compute(release.uid, release.model_uri, check.digest)


def compute(uid: str, model_uri: str, digest: str) -> str:
    return naming.digest({"uid": uid, "modelUri": model_uri, "modelDigest": digest}, 16)


@dataclass
class Identities:
    """This process's reads of the releases' model digests (kept in ``OperatorState``; a test makes its own):
    the last read per release uid, and the reads in flight. A read is newer than the release's status until the
    release's pass writes it there, so the plans see the releases through :meth:`known`."""

    checks: dict[str, ModelCheck] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def check(self, release: ReleaseView) -> ModelCheck | None:
        """What is known of the release's model digest: this process's last read, else the release's status."""
        own = self.checks.get(release.uid)
        return own if own is not None and own.uri == release.model_uri else check_of(release)

    def known(self, release: ReleaseView) -> ReleaseView:
        """``release`` with this process's last read of its digest in its status (as its pass will write it):
        what the pure functions (identity_of, check_of, the plans) read."""
        own = self.checks.get(release.uid)
        if own is None or own.uri != release.model_uri or check_of(release) == ModelCheck(own.uri, own.digest):
            return release
        status = {**release.status, "modelDigest": own.digest, "modelDigestUri": own.uri}
        return dataclasses.replace(release, status=status)

    def refresh(self, release: ReleaseView, settings: Settings) -> None:
        """Starts a background read of the release's model digest when one is due; never waits for it."""
        own = self.checks.get(release.uid)
        due = (
            own is None
            or own.uri != release.model_uri
            or time.monotonic() - own.at >= settings.model_digest_refresh_seconds
        )
        if not due or release.uid in self.tasks:
            return
        previous = self.check(release)
        uid, uri = release.uid, release.model_uri

        async def read() -> None:
            try:
                digest = await storage.call(storage.model_digest, uri, settings=settings)
                self.checks[uid] = ModelCheck(uri, digest, None, time.monotonic())
            except Exception as exc:  # StorageUnavailable, or anything else the client library raises
                logger.warning("cannot read the model digest of %s: %s", release.name, exc)
                kept = previous.digest if previous is not None and previous.uri == uri else ""
                self.checks[uid] = ModelCheck(uri, kept, str(exc), time.monotonic())
            finally:
                self.tasks.pop(uid, None)

        self.tasks[uid] = asyncio.get_running_loop().create_task(read())

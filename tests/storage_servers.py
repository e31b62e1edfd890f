"""Pytest plugin: real storage servers on free loopback ports, started once per session.

moto_server, gcs_emulator and vercel_blob_double each yield the environment a provider reads;
make_provider(name) builds any of the four providers from it, and storage_provider runs a test
once per provider. Servers start only when a test asks for them and stop at session end.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import pytest

from storage_providers import StorageProvider, create_provider
from tests.fault_proxy import FaultProxy
from tests.vercel_blob_double import VercelBlobDouble

PROVIDER_NAMES = ("local", "s3", "gcs", "vercel-blob")
TEST_PART_SIZE = 5 * 1024 * 1024
"""The smallest part size providers accept, so a 12 MiB file needs three parts."""
BUCKET = "tapedeck-test"
STARTUP_SECONDS = 30.0


class MemoryCheckpoint:
    """A dict-backed UploadCheckpoint that also remembers every state it was given."""

    def __init__(self) -> None:
        self.state: dict | None = None
        self.saves: list[dict] = []

    def load(self) -> dict | None:
        return json.loads(json.dumps(self.state)) if self.state is not None else None

    def save(self, state: dict) -> None:
        self.state = json.loads(json.dumps(state))  # what a durable store would keep: JSON
        self.saves.append(self.state)

    def clear(self) -> None:
        self.state = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _program(name: str) -> str:
    """A console script of this venv (beside the running python), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return found


@contextmanager
def _server(command: list[str], probe_url: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; wait until it answers HTTP first."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited early: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(probe_url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[0]} did not answer at {probe_url}: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3_client(env: Mapping[str, str]) -> Any:
    """A plain boto3 client for the env's endpoint, for setting up and inspecting the bucket."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name=env["S3_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )


def write_throwaway_service_account(path: Path) -> Path:
    """A service-account key file with a fresh RSA key: enough to sign URLs the emulator serves."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "tapedeck-test", "private_key_id": "throwaway",
        "private_key": pem, "client_email": "tapedeck-test@tapedeck-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


@contextmanager
def running_moto(directory: Path) -> Iterator[dict[str, str]]:
    """moto in server mode with the test bucket created, logging into directory; yields the s3 provider's env
    (STORAGE_PART_SIZE left to its default). The fixture below and bench/live_bench.py both run it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _server([_program("moto_server"), "-H", "127.0.0.1", "-p", str(port)], url, directory / "moto.log"):
        env = {
            "STORAGE_PROVIDER": "s3", "S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": url,
            "S3_REGION": "us-east-1", "S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        }
        s3_client(env).create_bucket(Bucket=BUCKET)
        yield env


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto in server mode with the test bucket created; yields the s3 provider's env."""
    with running_moto(tmp_path_factory.mktemp("moto")) as env:
        yield {**env, "STORAGE_PART_SIZE": str(TEST_PART_SIZE)}


@pytest.fixture
def s3_fault_proxy(moto_server: dict[str, str]) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto; use proxy.url as S3_ENDPOINT_URL."""
    proxy = FaultProxy(upstream_port=urlsplit(moto_server["S3_ENDPOINT_URL"]).port or 80).start()
    yield proxy
    proxy.stop()


@contextmanager
def running_gcs_emulator(home: Path) -> Iterator[dict[str, str]]:
    """gcp-storage-emulator in memory with the test bucket, its log and key file in home; yields the gcs
    provider's env (STORAGE_PART_SIZE left to its default). The fixture below and bench/live_bench.py run it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [_program("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
               "--in-memory", "--default-bucket", BUCKET]
    with _server(command, f"{url}/storage/v1/b", home / "emulator.log"):
        yield {
            "STORAGE_PROVIDER": "gcs", "GCS_BUCKET": BUCKET, "STORAGE_EMULATOR_HOST": url,
            "GCS_CREDENTIALS_FILE": str(write_throwaway_service_account(home / "key.json")),
            "GOOGLE_CLOUD_PROJECT": "tapedeck-test",
        }


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """gcp-storage-emulator in memory with the test bucket; yields the gcs provider's env."""
    with running_gcs_emulator(tmp_path_factory.mktemp("gcs")) as env:
        yield {**env, "STORAGE_PART_SIZE": str(TEST_PART_SIZE)}


@pytest.fixture(scope="session")
def vercel_blob_store() -> Iterator[VercelBlobDouble]:
    """The running Vercel Blob double itself (its blobs, request log and forced failures)."""
    double = VercelBlobDouble().start()
    yield double
    double.stop()


@pytest.fixture(scope="session")
def vercel_blob_double(vercel_blob_store: VercelBlobDouble) -> dict[str, str]:
    """The vercel-blob provider's env, pointing the SDK at the double."""
    return {
        "STORAGE_PROVIDER": "vercel-blob", "BLOB_READ_WRITE_TOKEN": vercel_blob_store.token,
        "VERCEL_BLOB_API_URL": vercel_blob_store.api_url, "STORAGE_PART_SIZE": str(TEST_PART_SIZE),
    }


SERVER_FIXTURES = {"s3": "moto_server", "gcs": "gcs_emulator", "vercel-blob": "vercel_blob_double"}


@pytest.fixture
def storage_env(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """env_for(name): a fresh copy of the named provider's env (local gets a tmp dir)."""

    def env_for(name: str) -> dict[str, str]:
        if name == "local":
            return {"STORAGE_PROVIDER": "local", "LOCAL_STORAGE_DIR": str(tmp_path / "local-storage"),
                    "LOCAL_URL_SECRET": "local-test-secret"}
        return dict(request.getfixturevalue(SERVER_FIXTURES[name]))

    return env_for


@pytest.fixture
def make_provider(storage_env: Callable[[str], dict[str, str]]) -> Callable[..., StorageProvider]:
    """make_provider(name, **env_overrides) through the registry, as the app builds it."""

    def make(name: str, **overrides: str) -> StorageProvider:
        return create_provider(env={**storage_env(name), **overrides})

    return make


@pytest.fixture(params=PROVIDER_NAMES)
def storage_provider(request: pytest.FixtureRequest, make_provider: Callable[..., StorageProvider]) -> StorageProvider:
    """Each of the four providers in turn."""
    return make_provider(request.param)


__all__ = ["BUCKET", "MemoryCheckpoint", "PROVIDER_NAMES", "TEST_PART_SIZE", "free_port", "running_gcs_emulator",
           "running_moto", "s3_client", "write_throwaway_service_account"]

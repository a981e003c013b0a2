"""The workflow used as a Snakemake module from a URL, as a deployment would use it from GitHub.

The repository's workflow files are served over HTTP from this machine (no network), and a
deployment folder holding only its own config/ and a Snakefile that imports every rule from that
URL builds the toy DAG. The workflow's own files (the figure notebooks, the report captions) must
then come from the served copy through Snakemake's source cache, not from the working directory
or from this checkout.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest

from seqedit.report.build import FIGURE_ORDER

from .conftest import copy_workflow
from .test_workflow import BASIC_CONFIG, REPO, dry_run, expected_counts, job_counts


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def do_GET(self):  # noqa: N802 (the base class's name)
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # no access log on stderr
        pass


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """(URL of a served copy of the workflow, the list of paths requested from it)."""
    root = copy_workflow(tmp_path_factory.mktemp("served"))
    requested: list[str] = []
    handler = functools.partial(type("Handler", (_Handler,), {"requested": requested}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, remote):
    """A folder with the user's config/ and a Snakefile that uses every rule of the remote workflow."""
    url, _ = remote
    folder = tmp_path_factory.mktemp("deployment")
    shutil.copytree(REPO / "config", folder / "config")
    (folder / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\n'
        "module seqedit:\n"
        f'    snakefile: "{url}/Snakefile"\n'
        "    config: config\n\n\n"
        "use rule * from seqedit\n"
    )
    return folder


def test_a_remote_module_finds_its_notebooks_and_captions_through_the_source_cache(remote, deployment):
    _, requested = remote
    result = dry_run("--configfile", str(BASIC_CONFIG), "--printshellcmds", "all", cwd=deployment)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert job_counts(result.stdout) == expected_counts(BASIC_CONFIG)

    # Each figure job reads its notebook from a local copy fetched from the URL: not from the
    # deployment folder (which has none) and not from this checkout.
    notebooks = re.findall(r"papermill (\S+) results/testbed/notebooks/(\w+)\.ipynb", result.stdout)
    assert sorted(name for _, name in notebooks) == sorted(FIGURE_ORDER)
    for path, name in notebooks:
        assert path.endswith(f"notebooks/{name}.ipynb"), path
        assert not Path(path).is_relative_to(REPO) and not Path(path).is_relative_to(deployment), path
        assert f"/notebooks/{name}.ipynb" in requested
    # The report's captions come the same way.
    assert "/workflow/report/edit_curves.rst" in requested
    assert not (deployment / "notebooks").exists() and not (deployment / "workflow").exists()

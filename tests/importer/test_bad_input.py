"""Bad input to `metalform import`: one clear line, exit 1, nothing written, no BMC asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalform.cli import main
from metalform.importer.ranges import RangeError, expand

CREDENTIAL = """\
apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: IMPORT_BAD_PW}}
"""


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMPORT_BAD_PW", "not-used-Pa55")
    (tmp_path / "credentials.yaml").write_text(CREDENTIAL, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["10.1.0.300/24"], "'10.1.0.300/24' is not a CIDR range"),
        (["10.1.0.90-10.1.0.10"], "the span must go from low to high"),
        (["10.1.0.1-fish"], "'fish' is not an IP address"),
        (["10.0.0.0/8"], "holds 16,777,214 addresses, more than 65,536; give --force"),
        (["127.0.0.1", "--credential", "nope"], "--credential 'nope': no Credential of that name"),
        (["127.0.0.1", "--name", "{rack}"], "unknown placeholder {rack}"),
        (["127.0.0.1", "--label", "site"], "--label 'site' is not K=V"),
        (["@missing.txt"], "cannot read missing.txt"),
    ],
)
def test_bad_input_is_one_clear_error(
    repo: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", "redfish", *args, "-C", str(repo)]
    if "--credential" not in args:
        argv += ["--credential", "bmc"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in repo.iterdir()) == ["credentials.yaml"]


def test_unwritable_out(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A file where the folder should be: unwritable even for root (who ignores modes).
    out = repo / "credentials.yaml" / "imported"
    code = main(
        [
            "import",
            "redfish",
            "127.0.0.1",
            "--credential",
            "bmc",
            "-C",
            str(repo),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert f"cannot write to --out {out}: Not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == ["credentials.yaml"]


def test_a_secret_that_is_not_set_stops_before_probing(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IMPORT_BAD_PW")
    assert main(["import", "ipmi", "127.0.0.1", "--credential", "bmc", "-C", str(repo)]) == 1
    assert "IMPORT_BAD_PW" in capsys.readouterr().err


def test_ranges(tmp_path: Path) -> None:
    assert expand("10.1.0.0/30") == ["10.1.0.1", "10.1.0.2"]
    assert expand("10.1.0.254-10.1.1.1") == ["10.1.0.254", "10.1.0.255", "10.1.1.0", "10.1.1.1"]
    listing = tmp_path / "bmcs.txt"
    listing.write_text("# rack r01\n10.2.0.5\n10.2.0.6-10.2.0.7\n10.2.0.5\n", encoding="utf-8")
    assert expand(f"@{listing}") == ["10.2.0.5", "10.2.0.6", "10.2.0.7"]
    assert len(expand("10.0.0.0/15", force=True)) == 131_070
    listing.write_text("10.2.0.5\nnope\n", encoding="utf-8")
    with pytest.raises(RangeError, match=rf"{listing}:2:1: 'nope' is not an IP address"):
        expand(f"@{listing}")

"""`enricher pages`: list and show pages of a running service, with read credentials."""

from __future__ import annotations

import asyncio

from enricher.pages.cli import main
from tests.conftest import post, webhook_body


async def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_list_and_show_need_the_read_credentials(make_client, capsys, tmp_path):
    client = await make_client({"api": {"auth": {"bearer_token": "reader"}}})
    hostile = webhook_body(
        commonAnnotations={
            **webhook_body()["commonAnnotations"],
            "summary": "\x1b[2J\x1b[31mcleared your screen",
        }
    )
    assert (await post(client, hostile)).status == 200
    url = str(client.make_url("")).rstrip("/")
    code, out, err = await _run(capsys, "--url", url)
    assert code == 1 and "HTTP 401" in err and "--token" in err and out == ""
    token = tmp_path / "token"
    token.write_text("reader\n")
    for _ in range(100):
        code, out, err = await _run(capsys, "--url", url, "--token-file", str(token))
        if "log sent" in out:
            break
        await asyncio.sleep(0.05)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["ID", "STATUS", "PAGED"]
    assert row.split()[:2] == ["1", "firing"] and "cleared your screen" in row
    assert "\x1b" not in out, "alert content never sends terminal escapes"
    code, out, err = await _run(capsys, "show", "1", "--url", url, "--token", "reader")
    assert code == 0, err
    assert "cleared your screen" in out.splitlines()[0] and "\x1b" not in out
    assert "No evidence: no evidence source" in out
    assert f"HTML page: {url}/pages/1" in out
    code, out, err = await _run(capsys, "show", "999", "--url", url, "--token", "reader")
    assert code == 1 and "HTTP 404" in err
    code, out, err = await _run(capsys, "show", "x", "--url", url, "--token", "reader")
    assert code == 2


async def test_an_unreachable_service_is_one_line(capsys):
    code, _out, err = await _run(capsys, "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the service" in err and len(err.splitlines()) == 1

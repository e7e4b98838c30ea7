"""The Apache parser follows httpd's startup rules, and every node keeps its file and line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from relayguard.audit import AuditOptions, audit_paths
from relayguard.audit.apache import parse_apache, split_args

MODS = "/usr/lib/apache2/modules"


def names(cfg) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.name, n.args) for top in cfg.nodes for n in top.walk()]


def test_include_globs_relative_to_serverroot_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d/b.conf").write_text("ServerAdmin b@example.com\n")
    (tmp_path / "conf.d/a.conf").write_text("\n\nServerAdmin a@example.com\n")
    (tmp_path / "conf.d/.hidden.conf").write_text("ServerAdmin hidden@example.com\n")
    (tmp_path / "conf.d/skip.txt").write_text("ServerAdmin txt@example.com\n")
    (tmp_path / "httpd.conf").write_text("Include conf.d/*.conf\n")
    cfg = parse_apache(tmp_path / "httpd.conf")
    admins = [(n.args[0], Path(n.path).name, n.line) for n in cfg.nodes]
    assert admins == [("a@example.com", "a.conf", 3), ("b@example.com", "b.conf", 1)]
    assert cfg.nodes[0].included_from == ((str(tmp_path / "httpd.conf"), 1),)


def test_directory_include_is_recursive(tmp_path: Path) -> None:
    (tmp_path / "extra/sub").mkdir(parents=True)
    (tmp_path / "extra/sub/z.conf").write_text("ServerAdmin z@example.com\n")
    (tmp_path / "httpd.conf").write_text("ServerRoot " + str(tmp_path) + "\nInclude extra\n")
    assert ("ServerAdmin", ("z@example.com",)) in names(parse_apache(tmp_path / "httpd.conf"))


def test_define_and_env_variables(tmp_path: Path) -> None:
    (tmp_path / "envvars").write_text("export APACHE_LOG_DIR=/var/log/apache2$SUFFIX\n")
    (tmp_path / "apache2.conf").write_text(
        "Define SITE example\nServerName www.${SITE}.com\nErrorLog ${APACHE_LOG_DIR}/e.log\n"
        "CustomLog ${UNDEFINED}/a.log combined\nUnDefine SITE\nServerAlias ${SITE}\n")
    got = names(parse_apache(tmp_path))
    assert ("ServerName", ("www.example.com",)) in got
    assert ("ErrorLog", ("/var/log/apache2/e.log",)) in got
    assert ("CustomLog", ("${UNDEFINED}/a.log", "combined")) in got  # httpd keeps it as written
    assert ("ServerAlias", ("${SITE}",)) in got


def test_ifmodule_is_decided_where_it_stands(tmp_path: Path) -> None:
    # httpd evaluates <IfModule> at that point of the file: a later LoadModule does not count.
    (tmp_path / "httpd.conf").write_text(
        "<IfModule proxy_module>\nProxyRequests On\n</IfModule>\n"
        "<IfModule !mod_proxy.c>\nServerAdmin before@example.com\n</IfModule>\n"
        f"LoadModule proxy_module {MODS}/mod_proxy.so\n"
        "<IfModule mod_proxy.c>\nServerAdmin after@example.com\n</IfModule>\n"
        "<IfModule log_config_module>\nServerAdmin static@example.com\n</IfModule>\n")
    got = names(parse_apache(tmp_path / "httpd.conf"))
    assert ("ProxyRequests", ("On",)) not in got
    assert ("ServerAdmin", ("before@example.com",)) in got
    assert ("ServerAdmin", ("after@example.com",)) in got
    assert ("ServerAdmin", ("static@example.com",)) in got


def test_ifdefine_ifversion_and_command_line_defines(tmp_path: Path) -> None:
    (tmp_path / "httpd.conf").write_text(
        "<IfDefine SSL>\nServerAdmin ssl@example.com\n</IfDefine>\n"
        "<IfDefine !SSL>\nServerAdmin nossl@example.com\n</IfDefine>\n"
        "<IfVersion >= 2.4>\nServerAdmin v24@example.com\n</IfVersion>\n"
        "<IfVersion < 2.3>\nServerAdmin v22@example.com\n</IfVersion>\n")
    plain = names(parse_apache(tmp_path / "httpd.conf"))
    assert ("ServerAdmin", ("nossl@example.com",)) in plain
    assert ("ServerAdmin", ("v24@example.com",)) in plain
    assert ("ServerAdmin", ("v22@example.com",)) not in plain
    ssl = names(parse_apache(tmp_path / "httpd.conf", AuditOptions(defines=("SSL",))))
    assert ("ServerAdmin", ("ssl@example.com",)) in ssl


def test_continuations_quotes_and_case(tmp_path: Path) -> None:
    (tmp_path / "httpd.conf").write_text(
        "proxyrequests \\\n    on\n<proxy \"http://a b/*\">\n  require ip 10.0.0.1 \\\n"
        "   10.0.0.2\n</PROXY>\n")
    cfg = parse_apache(tmp_path / "httpd.conf")
    assert not cfg.errors
    first, section = cfg.nodes
    assert (first.key, first.args, first.line) == ("proxyrequests", ("on",), 1)
    assert (section.key, section.args, section.line, section.end_line) == \
        ("proxy", ("http://a b/*",), 3, 6)
    assert section.children[0].args == ("ip", "10.0.0.1", "10.0.0.2")


def test_split_args_quotes_like_httpd() -> None:
    assert split_args('a "b c" \'d e\' "f\\"g"') == ("a", "b c", "d e", 'f"g')
    assert split_args('"unterminated here') == ("unterminated here",)


def test_rhel_layout_under_root(tmp_path: Path) -> None:
    conf = tmp_path / "etc/httpd/conf"
    modsd = tmp_path / "etc/httpd/conf.modules.d"
    confd = tmp_path / "etc/httpd/conf.d"
    for d in (conf, modsd, confd):
        d.mkdir(parents=True)
    (conf / "httpd.conf").write_text('ServerRoot "/etc/httpd"\nListen 80\n'
                                     "Include conf.modules.d/*.conf\n"
                                     "IncludeOptional conf.d/*.conf\n")
    (modsd / "00-proxy.conf").write_text(
        "LoadModule proxy_module modules/mod_proxy.so\n"
        "LoadModule proxy_http_module modules/mod_proxy_http.so\n")
    (confd / "proxy.conf").write_text("# forward proxy for the office\n\nProxyRequests On\n")
    report = audit_paths([], options=AuditOptions(root=tmp_path), server_type="apache")
    assert not report.errors
    hits = {(f.rule, f.location.path, f.location.line) for f in report.findings}
    assert ("APACHE-OPEN-FORWARD-PROXY", str(confd / "proxy.conf"), 3) in hits


def test_outside_client_option_changes_the_verdict(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(f"LoadModule proxy_module {MODS}/mod_proxy.so\n"
                    f"LoadModule proxy_http_module {MODS}/mod_proxy_http.so\n"
                    "ProxyRequests On\n<Proxy *>\n    Require ip 10.0.0.0/8\n</Proxy>\n")
    def rules(client: str | None) -> set[str]:
        opts = AuditOptions(outside_client=ipaddress.ip_address(client) if client else None)
        return {f.rule for f in audit_paths([conf], options=opts).findings}
    assert "APACHE-OPEN-FORWARD-PROXY" not in rules(None)
    assert "APACHE-OPEN-FORWARD-PROXY" in rules("10.1.2.3")

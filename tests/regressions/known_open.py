"""Open findings: each has a named regression test that fails until the fix lands.

The fuzz smoke test skips only the check an open finding trips (``KZFILTER_FUZZ_KNOWN``) and the
sanitizer job leaves these files out, so one bug fails one test.  Remove an entry with its fix.
"""
# key (KZFILTER_FUZZ_KNOWN) -> regression test, e.g.
#     "http-ctl": "tests/regressions/test_http_host_control_bytes.py",   (fixed in 236e049)
KNOWN_OPEN: dict[str, str] = {}

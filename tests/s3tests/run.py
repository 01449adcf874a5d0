#!/usr/bin/env python3
"""Runs the vendored s3-tests subset against an S3 endpoint (the vault's own
runner, not upstream code; tests/s3_tests.rs calls it).

    python3 run.py --endpoint http://127.0.0.1:PORT --access-key alice \\
        --secret-key SECRET [--results FILE] [--timeout SECONDS] [-- PYTEST ARGS]

It writes the S3TEST_CONF file s3-tests reads (one user: the gateway has one,
so the "alt", "tenant" and IAM users are the same credentials) and an AWS
config file (path-style addressing, us-east-1, one attempt per request so
that no error is hidden by a retry) into a temporary folder, keeps the
machine's own AWS settings out, and runs pytest on
s3tests/functional/test_s3.py with a bound on the whole run. Its exit code
is pytest's, or 124 if the bound was hit.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))

S3TEST_CONF = """[DEFAULT]
host = {host}
port = {port}
is_secure = False
ssl_verify = False

[fixtures]
bucket prefix = test-{{random}}-

[s3 main]
display_name = {user}
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}

[s3 alt]
display_name = {user}
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}

[s3 tenant]
display_name = {user}
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}
tenant = {user}

[iam]
display_name = {user}
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}

[iam root]
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}

[iam alt root]
user_id = {user}
email = {user}@example.com
access_key = {access}
secret_key = {secret}
"""

AWS_CONFIG = """[default]
region = us-east-1
max_attempts = 1
s3 =
    addressing_style = path
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--results", help="file to append NAME OUTCOME lines to")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()

    url = urlparse(args.endpoint)
    if url.scheme != "http" or not url.hostname or not url.port:
        sys.exit("run.py: --endpoint must be http://HOST:PORT")

    with tempfile.TemporaryDirectory(prefix="s3tests-") as tmp:
        conf = os.path.join(tmp, "s3tests.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                S3TEST_CONF.format(
                    host=url.hostname,
                    port=url.port,
                    user=args.access_key.lower(),
                    access=args.access_key,
                    secret=args.secret_key,
                )
            )
        aws_conf = os.path.join(tmp, "aws.conf")
        with open(aws_conf, "w", encoding="utf-8") as f:
            f.write(AWS_CONFIG)

        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            S3TEST_CONF=conf,
            AWS_CONFIG_FILE=aws_conf,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONDONTWRITEBYTECODE="1",
            NO_PROXY="*",
        )
        env.pop("HTTP_PROXY", None)
        env.pop("HTTPS_PROXY", None)
        env.pop("http_proxy", None)
        env.pop("https_proxy", None)
        if args.results:
            env["S3TESTS_RESULTS"] = os.path.abspath(args.results)

        cmd = [
            sys.executable, "-m", "pytest",
            "-q", "-rfE", "-p", "no:cacheprovider",
            "s3tests/functional/test_s3.py",
        ] + args.pytest_args
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print("run.py: pytest stopped after %.0f s" % args.timeout, flush=True)
            return 124


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""boto3 against `vault-client serve`, for tests/gateway_tools.rs.

Usage: boto_checks.py COMMAND JSON-ARGS

The endpoint and keys come from the environment: S3_ENDPOINT (http://127.0.0.1:PORT),
S3_ACCESS_KEY, S3_SECRET_KEY. Prints one JSON object of what it saw (status codes,
error codes, hex of small bodies, MD5s of large ones); the Rust test judges it.
Exits non-zero with a message when something it needs fails unexpectedly.
"""

import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
ACCESS = os.environ["S3_ACCESS_KEY"]
SECRET = os.environ["S3_SECRET_KEY"]


def client(access=ACCESS, secret=SECRET):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=30,
            read_timeout=120,
        ),
    )


def err(e):
    """Status and S3 error code of a botocore ClientError."""
    return {
        "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
        "code": e.response.get("Error", {}).get("Code"),
    }


def fetch(url):
    """GETs url with urllib: status, S3 error code, MD5 and length of the body."""
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            body = r.read()
            return {"status": r.status, "md5": hashlib.md5(body).hexdigest(), "len": len(body)}
    except urllib.error.HTTPError as e:
        body = e.read()
        m = re.search(rb"<Code>([^<]*)</Code>", body)
        return {
            "status": e.code,
            "code": m.group(1).decode() if m else None,
            "body": body[:500].decode("utf-8", "replace"),
        }


def md5_of(s3, bucket, key):
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.md5(body).hexdigest()


def ensure_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def features(args):
    """Presigned GET, Range GETs, CopyObject, DeleteObjects, metadata."""
    s3 = client()
    out = {}
    ensure_bucket(s3, "docs")
    ensure_bucket(s3, "backup")
    with open(args["file"], "rb") as f:
        data = f.read()
    # One object in a single PUT, the same bytes again in a multipart upload.
    put = s3.put_object(Bucket="docs", Key="single.bin", Body=data)
    out["single_etag"] = put["ETag"].strip('"')
    from boto3.s3.transfer import TransferConfig

    part = args["part_size"]
    s3.upload_file(
        args["file"],
        "docs",
        "multi.bin",
        Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, use_threads=False),
    )
    out["multi_etag"] = s3.head_object(Bucket="docs", Key="multi.bin")["ETag"].strip('"')

    # Presigned GET, fetched without boto3.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "docs", "Key": "single.bin"}, ExpiresIn=300
    )
    out["presigned"] = fetch(url)

    # Ranges: hex of each slice, of both objects.
    out["ranges"] = {}
    for key in ("single.bin", "multi.bin"):
        got = {}
        for rng in args["ranges"]:
            r = s3.get_object(Bucket="docs", Key=key, Range=rng)
            body = r["Body"].read()
            got[rng] = {
                "status": r["ResponseMetadata"]["HTTPStatusCode"],
                "content_range": r.get("ContentRange"),
                "hex": body.hex(),
            }
        out["ranges"][key] = got

    # CopyObject, in the bucket and to another one.
    c1 = s3.copy_object(Bucket="docs", Key="copy.bin", CopySource={"Bucket": "docs", "Key": "single.bin"})
    c2 = s3.copy_object(
        Bucket="backup", Key="deep/copy.bin", CopySource={"Bucket": "docs", "Key": "single.bin"}
    )
    out["copy_etags"] = [
        c1["CopyObjectResult"]["ETag"].strip('"'),
        c2["CopyObjectResult"]["ETag"].strip('"'),
    ]
    out["copy_md5s"] = [md5_of(s3, "docs", "copy.bin"), md5_of(s3, "backup", "deep/copy.bin")]

    # DeleteObjects of three keys.
    keys = ["del/k1.txt", "del/k2.txt", "del/sub/k3.txt"]
    for k in keys:
        s3.put_object(Bucket="docs", Key=k, Body=k.encode())
    before = s3.list_objects_v2(Bucket="docs", Prefix="del/")
    out["del_listed_before"] = sorted(o["Key"] for o in before.get("Contents", []))
    d = s3.delete_objects(
        Bucket="docs", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False}
    )
    out["deleted"] = sorted(x["Key"] for x in d.get("Deleted", []))
    out["delete_errors"] = d.get("Errors", [])
    after = s3.list_objects_v2(Bucket="docs", Prefix="del/")
    out["del_listed_after"] = sorted(o["Key"] for o in after.get("Contents", []))
    heads = []
    for k in keys:
        try:
            s3.head_object(Bucket="docs", Key=k)
            heads.append(200)
        except ClientError as e:
            heads.append(err(e)["status"])
    out["del_heads"] = heads

    # User metadata and Content-Type.
    s3.put_object(
        Bucket="docs",
        Key="meta.txt",
        Body=b"hello metadata",
        Metadata={"a": "1", "b": "x y"},
        ContentType="text/plain",
    )
    h = s3.head_object(Bucket="docs", Key="meta.txt")
    g = s3.get_object(Bucket="docs", Key="meta.txt")
    out["meta_head"] = {
        "metadata": h.get("Metadata"),
        "content_type": h.get("ContentType"),
        "length": h.get("ContentLength"),
        "etag": h["ETag"].strip('"'),
    }
    out["meta_get"] = {
        "metadata": g.get("Metadata"),
        "content_type": g.get("ContentType"),
        "body": g["Body"].read().decode(),
    }
    return out


def security(args):
    """Wrong secret, unknown key, tampered and expired presigned URLs."""
    s3 = client()
    ensure_bucket(s3, "docs")
    s3.put_object(Bucket="docs", Key="secret.txt", Body=b"the real thing")
    out = {}
    try:
        client(secret=SECRET + "x").put_object(Bucket="docs", Key="wrong-secret.txt", Body=b"no")
        out["wrong_secret"] = {"status": 200, "code": None}
    except ClientError as e:
        out["wrong_secret"] = err(e)
    try:
        client(secret=SECRET + "x").get_object(Bucket="docs", Key="secret.txt")["Body"].read()
        out["wrong_secret_get"] = {"status": 200, "code": None}
    except ClientError as e:
        out["wrong_secret_get"] = err(e)
    try:
        client(access="mallory").put_object(Bucket="docs", Key="unknown-key.txt", Body=b"no")
        out["unknown_key"] = {"status": 200, "code": None}
    except ClientError as e:
        out["unknown_key"] = err(e)
    try:
        client(access="mallory").list_objects_v2(Bucket="docs")
        out["unknown_key_list"] = {"status": 200, "code": None}
    except ClientError as e:
        out["unknown_key_list"] = err(e)

    params = {"Bucket": "docs", "Key": "secret.txt"}
    good = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    out["presigned_good"] = fetch(good)
    m = re.search(r"X-Amz-Signature=([0-9a-f]+)", good)
    if not m:
        sys.exit("no X-Amz-Signature in the presigned URL: " + good)
    sig = m.group(1)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    out["presigned_tampered"] = fetch(good.replace(sig, flipped))
    # The same signature for another key.
    out["presigned_other_key"] = fetch(good.replace("secret.txt", "wrong-secret.txt"))

    t0 = time.time()
    short = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=1)
    # Wait by the clock (X-Amz-Date is whole seconds): 2.5 s after signing.
    while time.time() < t0 + 2.5:
        time.sleep(0.05)
    out["presigned_expired"] = fetch(short)
    return out


def badkeys(args):
    """PUTs a good key, then each bad key: status and code of each."""
    s3 = client()
    ensure_bucket(s3, "docs")
    s3.put_object(Bucket="docs", Key="good.txt", Body=b"good")
    raw = {}

    def keep(http_response, **_):
        raw["body"] = http_response.content[:300].decode("utf-8", "replace")

    s3.meta.events.register("after-call.s3.PutObject", keep)
    out = {}
    for key in args["keys"]:
        raw.clear()
        try:
            s3.put_object(Bucket="docs", Key=key, Body=b"bad key body")
            out[key] = {"status": 200, "code": None}
        except ClientError as e:
            out[key] = err(e)
        # The raw response, to show when the test fails.
        out[key]["body"] = raw.get("body")
    return out


def main():
    cmd = sys.argv[1]
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    fn = {"features": features, "security": security, "badkeys": badkeys}[cmd]
    try:
        out = fn(args)
    except ClientError as e:
        sys.exit(f"{cmd}: unexpected S3 error: {e} {json.dumps(err(e))}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

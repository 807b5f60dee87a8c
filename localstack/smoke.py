"""Smoke test of the local AWS emulator: the calls heroku2rds makes, through boto3.

Run by localstack/smoke with the moto venv's Python and the environment localstack/start
prints (AWS_ENDPOINT_URL, dummy keys, AWS_DEFAULT_REGION). Every resource name carries a random
suffix, so the test can share an emulator with other users. Options:
  --iam-enforcement  also run the checks that switch moto's IAM enforcement on, which is global
                     to the server: only on a server nobody else uses.
Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

PRIMARY_REGION = "us-east-2"
REPLICA_REGION = "us-east-1"
CANONICAL = "099720109477"
NOBLE_AMD64 = "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*"
TAG_KEY = "heroku2rds:migration"

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
RUN = secrets.token_hex(3)
NAME = f"h2r-smoke-{RUN}"
HTTP_TIMEOUT = 30  # seconds; an emulator bug must fail the check, not hang it
TAGS = [{"Key": TAG_KEY, "Value": NAME}]

passed: list[str] = []
failed: list[str] = []
skipped: list[str] = []
state: dict[str, Any] = {}


def client(service: str, region: str = PRIMARY_REGION, **kwargs: Any) -> Any:
    # No retries: an emulator error must show as it is, not after a retry hid it.
    config = Config(connect_timeout=5, read_timeout=HTTP_TIMEOUT, retries={"total_max_attempts": 1})
    return boto3.client(service, region_name=region, config=config, **kwargs)


def check(name: str, fn: Callable[[], str | None]) -> bool:
    """Runs one check; prints `ok`, `FAIL` or `skip` with a detail line."""
    try:
        detail = fn()
    except Skip as skip:
        skipped.append(name)
        print(f"skip  {name}: {skip}", flush=True)
        return True
    except Exception as error:  # noqa: BLE001 - a smoke test reports every failure
        failed.append(name)
        print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(file=sys.stderr)
        return False
    passed.append(name)
    print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)
    return True


class Skip(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_error(code: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except ClientError as error:
        got = error.response["Error"]["Code"]
        expect(got == code, f"expected error {code}, got {got}")
        return
    raise AssertionError(f"expected error {code}, the call succeeded")


# --- STS -------------------------------------------------------------------------------------


def sts_identity() -> str:
    identity = client("sts").get_caller_identity()
    expect(identity["Account"].isdigit() and len(identity["Account"]) == 12, str(identity))
    return f"account {identity['Account']}, {identity['Arn']}"


# --- EC2 -------------------------------------------------------------------------------------


def security_group() -> str:
    ec2 = client("ec2")
    group_id = ec2.create_security_group(
        GroupName=NAME,
        Description="heroku2rds smoke test database access",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": TAGS}],
    )["GroupId"]
    state["sg"] = group_id
    rule = {
        "IpProtocol": "tcp",
        "FromPort": 5432,
        "ToPort": 5432,
        "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "operator address"}],
    }
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
    expect_error(
        "InvalidPermission.Duplicate",
        lambda: ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule]),
    )
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    ranges = [
        r["CidrIp"]
        for p in group["IpPermissions"]
        if p.get("FromPort") == 5432
        for r in p["IpRanges"]
    ]
    expect(ranges == ["203.0.113.7/32"], f"ingress ranges {ranges}")
    by_tag = ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [NAME]}])
    expect([g["GroupId"] for g in by_tag["SecurityGroups"]] == [group_id], "tag filter")
    return f"{group_id} in {group['VpcId']}, 5432 from 203.0.113.7/32, found by tag filter"


def ubuntu_ami() -> str:
    found = []
    for region in (PRIMARY_REGION, REPLICA_REGION):
        images = client("ec2", region).describe_images(
            Owners=[CANONICAL], Filters=[{"Name": "name", "Values": [NOBLE_AMD64]}]
        )["Images"]
        expect(images, f"no Ubuntu 24.04 amd64 image in {region}")
        expect(all(i["OwnerId"] == CANONICAL for i in images), "owner filter")
        newest = max(images, key=lambda i: i["CreationDate"])
        expect(newest["Architecture"] == "x86_64", newest["Architecture"])
        found.append(f"{region} {newest['ImageId']} {newest['Name'].rsplit('/', 1)[1]}")
    arm = client("ec2").describe_images(
        Owners=[CANONICAL],
        Filters=[
            {"Name": "name", "Values": ["ubuntu/images/hvm-ssd*/ubuntu-*-server-*"]},
            {"Name": "architecture", "Values": ["arm64"]},
        ],
    )["Images"]
    series = sorted({i["Name"].split("/")[-1].split("-")[1] for i in arm})
    expect(series == ["jammy", "noble"], f"arm64 series {series}")
    # Without the owner, the name pattern also matches an impostor in the AMI list.
    anyone = client("ec2").describe_images(Filters=[{"Name": "name", "Values": [NOBLE_AMD64]}])[
        "Images"
    ]
    expect(any(i["OwnerId"] != CANONICAL for i in anyone), "impostor image missing from amis.json")
    return "; ".join(found) + f"; arm64 {'+'.join(series)}"


# --- S3 --------------------------------------------------------------------------------------


def s3_bucket() -> str:
    s3 = client("s3")
    expect_error("IllegalLocationConstraintException", lambda: s3.create_bucket(Bucket=NAME + "-x"))
    s3.create_bucket(Bucket=NAME, CreateBucketConfiguration={"LocationConstraint": PRIMARY_REGION})
    state["bucket"] = NAME
    block = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    s3.put_public_access_block(Bucket=NAME, PublicAccessBlockConfiguration=block)
    s3.put_bucket_encryption(
        Bucket=NAME,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_tagging(Bucket=NAME, Tagging={"TagSet": TAGS})
    got_block = s3.get_public_access_block(Bucket=NAME)["PublicAccessBlockConfiguration"]
    expect(got_block == block, f"public access block {got_block}")
    rule = s3.get_bucket_encryption(Bucket=NAME)["ServerSideEncryptionConfiguration"]["Rules"][0]
    expect(rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", str(rule))
    expect(s3.get_bucket_location(Bucket=NAME)["LocationConstraint"] == PRIMARY_REGION, "location")
    return f"{NAME}: public access blocked, AES256 by default, tagged"


def s3_multipart() -> str:
    s3 = client("s3")
    key = "archive/latest.dump"
    first, last = os.urandom(5 * 1024 * 1024), os.urandom(1000)
    upload = s3.create_multipart_upload(
        Bucket=NAME, Key=key, ContentType="application/octet-stream"
    )
    parts = []
    for number, body in ((1, first), (2, last)):
        etag = s3.upload_part(
            Bucket=NAME, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=NAME, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    head = s3.head_object(Bucket=NAME, Key=key)
    expect(head["ContentLength"] == len(first) + len(last), f"size {head['ContentLength']}")
    expect(
        head.get("ServerSideEncryption") == "AES256",
        f"object encryption {head.get('ServerSideEncryption')}",
    )

    # A part other than the last one under 5 MiB is refused at completion, as on AWS.
    small = s3.create_multipart_upload(Bucket=NAME, Key="small")
    small_parts = []
    for number in (1, 2):
        etag = s3.upload_part(
            Bucket=NAME,
            Key="small",
            UploadId=small["UploadId"],
            PartNumber=number,
            Body=b"x" * 1024,
        )["ETag"]
        small_parts.append({"PartNumber": number, "ETag": etag})
    expect_error(
        "EntityTooSmall",
        lambda: s3.complete_multipart_upload(
            Bucket=NAME,
            Key="small",
            UploadId=small["UploadId"],
            MultipartUpload={"Parts": small_parts},
        ),
    )
    s3.abort_multipart_upload(Bucket=NAME, Key="small", UploadId=small["UploadId"])
    expect(not s3.list_multipart_uploads(Bucket=NAME).get("Uploads"), "uploads left open")

    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": NAME, "Key": key}, ExpiresIn=300
    )
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        expect(response.read() == first + last, "presigned GET returned other bytes")

    # Fix 4: a presigned PUT labelled as a form (urllib's default, like `curl --data-binary`).
    job = os.urandom(2048)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": NAME, "Key": "job.bin"}, ExpiresIn=300
    )
    with urllib.request.urlopen(
        urllib.request.Request(put_url, data=job, method="PUT"), timeout=HTTP_TIMEOUT
    ) as response:
        expect(response.status == 200, f"presigned PUT answered {response.status}")
    stored = s3.get_object(Bucket=NAME, Key="job.bin")
    expect(stored["Body"].read() == job, "presigned PUT with a form content type lost its body")
    expect(
        stored["ContentType"].startswith("application/x-www-form-urlencoded"), stored["ContentType"]
    )
    return (
        f"2-part upload of {head['ContentLength']} bytes, EntityTooSmall on a 1 KiB first part, "
        "abort, presigned GET, presigned PUT (form-typed binary body kept)"
    )


# --- RDS -------------------------------------------------------------------------------------


def rds_primary() -> str:
    rds = client("rds")
    created = rds.create_db_instance(
        DBInstanceIdentifier=NAME,
        Engine="postgres",
        EngineVersion="16.4",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        StorageType="gp3",
        StorageEncrypted=True,
        MasterUsername="heroku2rds",
        ManageMasterUserPassword=True,
        DBName="app",
        VpcSecurityGroupIds=[state["sg"]],
        PubliclyAccessible=True,
        BackupRetentionPeriod=1,
        Tags=TAGS,
    )["DBInstance"]
    state["db_arn"] = created["DBInstanceArn"]
    db = rds.describe_db_instances(DBInstanceIdentifier=NAME)["DBInstances"][0]
    expect(db["DBInstanceStatus"] == "available", db["DBInstanceStatus"])
    expect(
        db["Engine"] == "postgres" and db["EngineVersion"].startswith("16."), db["EngineVersion"]
    )
    expect(
        db["StorageType"] == "gp3" and db["StorageEncrypted"],
        f"{db['StorageType']} {db['StorageEncrypted']}",
    )
    expect(
        [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [state["sg"]],
        "security group",
    )
    expect(db["Endpoint"]["Port"] == 5432, str(db["Endpoint"]))
    secret_arn = db.get("MasterUserSecret", {}).get("SecretArn")
    expect(bool(secret_arn), "no MasterUserSecret")
    secret = json.loads(
        client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    )
    expect(set(secret) >= {"username", "password"}, f"secret keys {sorted(secret)}")
    fields = {
        "Endpoint": f"{db['Endpoint']['Address']}:{db['Endpoint']['Port']}",
        "KmsKeyId": db.get("KmsKeyId"),
        "DbiResourceId": db.get("DbiResourceId"),
        "CACertificateIdentifier": db.get("CACertificateIdentifier"),
        "Iops/Throughput": (db.get("Iops"), db.get("StorageThroughput")),
        "AvailabilityZone": db.get("AvailabilityZone"),
        "DBSubnetGroup": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
        "DBParameterGroups": [g["DBParameterGroupName"] for g in db.get("DBParameterGroups", [])],
        "secret username": secret["username"],
    }
    print("      fields moto fills: " + json.dumps(fields, default=str), flush=True)
    return f"{NAME} available, postgres {db['EngineVersion']}, gp3, encrypted"


def rds_replica() -> str:
    rds_replica_region = client("rds", REPLICA_REGION)
    replica_id = NAME + "-replica"
    try:
        rds_replica_region.create_db_instance_read_replica(
            DBInstanceIdentifier=replica_id,
            SourceDBInstanceIdentifier=state["db_arn"],
            SourceRegion=PRIMARY_REGION,
            DBInstanceClass="db.t4g.micro",
            KmsKeyId="alias/aws/rds",
            Tags=TAGS + [{"Key": "role", "Value": "replica"}],
        )["DBInstance"]
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NotImplemented", "InvalidAction"):
            raise Skip(f"moto does not support cross-region replicas: {error}") from error
        raise
    state["replica"] = replica_id
    got = rds_replica_region.describe_db_instances(DBInstanceIdentifier=replica_id)["DBInstances"][
        0
    ]
    expect(f":{REPLICA_REGION}:" in got["DBInstanceArn"], got["DBInstanceArn"])
    expect(
        got["ReadReplicaSourceDBInstanceIdentifier"] == state["db_arn"],
        got["ReadReplicaSourceDBInstanceIdentifier"],
    )
    expect(got["DBInstanceStatus"] == "available", got["DBInstanceStatus"])
    primary = client("rds").describe_db_instances(DBInstanceIdentifier=NAME)["DBInstances"][0]
    expect(
        primary["ReadReplicaDBInstanceIdentifiers"] == [got["DBInstanceArn"]],
        str(primary["ReadReplicaDBInstanceIdentifiers"]),
    )
    endpoint = got["Endpoint"]["Address"]
    return f"{got['DBInstanceArn']} reads from the {PRIMARY_REGION} primary, endpoint {endpoint}"


def find_by_tag() -> str:
    found = {}
    for region in (PRIMARY_REGION, REPLICA_REGION):
        pages = (
            client("resourcegroupstaggingapi", region)
            .get_paginator("get_resources")
            .paginate(TagFilters=[{"Key": TAG_KEY, "Values": [NAME]}])
        )
        found[region] = sorted(
            m["ResourceARN"] for page in pages for m in page["ResourceTagMappingList"]
        )
    primary = found[PRIMARY_REGION]
    expect(
        any(f"security-group/{state['sg']}" in arn for arn in primary),
        f"security group not found: {primary}",
    )
    expect(state["db_arn"] in primary, f"db not found: {primary}")
    expect(f"arn:aws:s3:::{NAME}" in primary, f"bucket not found: {primary}")
    if "replica" in state:
        expect(
            any(arn.endswith(":db:" + state["replica"]) for arn in found[REPLICA_REGION]),
            f"replica not found: {found[REPLICA_REGION]}",
        )
        tags = client("rds").list_tags_for_resource(ResourceName=state["db_arn"])["TagList"]
        expect(
            {"Key": "role", "Value": "replica"} not in tags,
            f"replica tags leaked into the primary: {tags}",
        )
    return f"{len(primary)} in {PRIMARY_REGION}, {len(found[REPLICA_REGION])} in {REPLICA_REGION}"


# --- IAM enforcement (global to the server) --------------------------------------------------


def moto_api(path: str, body: bytes) -> None:
    # Not form-encoded (urllib's default): moto would parse the body as a form and find it empty.
    request = urllib.request.Request(
        ENDPOINT + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=HTTP_TIMEOUT).read()


def raw_query_call(
    credentials: Credentials, service: str, params: list[tuple[str, str]]
) -> tuple[int, str]:
    """A query-protocol call encoded like the AWS SDK for Rust does it (space as %20)."""
    body = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    request = AWSRequest(
        method="POST",
        url=ENDPOINT + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(credentials, service, PRIMARY_REGION).add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(
        ENDPOINT + "/", data=body.encode(), headers=dict(prepared.headers), method="POST"
    )
    try:
        with urllib.request.urlopen(http, timeout=HTTP_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def http_status(url: str, data: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, method=method), timeout=HTTP_TIMEOUT
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def iam_enforcement() -> str:
    iam = client("iam")
    user = NAME + "-operator"
    iam.create_user(UserName=user)
    state["iam_user"] = user
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["ec2:*", "sts:GetCallerIdentity"], "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{NAME}/*",
            },
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="smoke", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    state["iam_key"] = key["AccessKeyId"]
    creds = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    as_user = {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
    s3_user = client("s3", **as_user)
    # Presigned before enforcement starts: signing is local, and expiry needs time to pass.
    expiring = s3_user.generate_presigned_url(
        "get_object", Params={"Bucket": NAME, "Key": "archive/latest.dump"}, ExpiresIn=1
    )

    moto_api("/moto-api/reset-auth", b"0")
    try:
        arn = client("sts", **as_user).get_caller_identity()["Arn"]
        expect(arn.endswith(f":user/{user}"), arn)
        expect_error("AccessDenied", lambda: client("rds", **as_user).describe_db_instances())
        expect_error("InvalidClientTokenId", lambda: client("sts").get_caller_identity())

        # Fix 2: a description with spaces, encoded as %20.
        group = f"{NAME}-spaced"
        status, text = raw_query_call(
            creds,
            "ec2",
            [
                ("Action", "CreateSecurityGroup"),
                ("Version", "2016-11-15"),
                ("GroupName", group),
                ("GroupDescription", "worker group with spaces"),
            ],
        )
        expect(status == 200, f"%20-encoded CreateSecurityGroup answered {status}: {text[:200]}")
        state["sg_spaced"] = text.split("<groupId>")[1].split("</groupId>")[0]
        wrong = Credentials(key["AccessKeyId"], "not-the-secret")
        status, _ = raw_query_call(
            wrong,
            "ec2",
            [
                ("Action", "DescribeSecurityGroups"),
                ("Version", "2016-11-15"),
                ("GroupName.1", "a b"),
            ],
        )
        expect(status == 401, f"a wrong secret answered {status}")

        # Fix 3: presigned URLs are checked against the signer's key and policy.
        put_url = s3_user.generate_presigned_url(
            "put_object", Params={"Bucket": NAME, "Key": "job.json"}, ExpiresIn=300
        )
        status, _ = http_status(put_url, data=b'{"job": 1}', method="PUT")
        expect(status == 200, f"presigned PUT answered {status}")
        get_url = s3_user.generate_presigned_url(
            "get_object", Params={"Bucket": NAME, "Key": "job.json"}, ExpiresIn=300
        )
        status, body = http_status(get_url)
        expect(
            (status, body) == (200, b'{"job": 1}'),
            f"presigned GET answered {status} {body[:100]!r}",
        )
        tampered = get_url[:-1] + ("0" if get_url[-1] != "0" else "1")
        status, _ = http_status(tampered)
        expect(status == 403, f"tampered presigned URL answered {status}")
        time.sleep(2)
        status, _ = http_status(expiring)
        expect(status == 403, f"expired presigned URL answered {status}")
        delete_url = s3_user.generate_presigned_url(
            "delete_object", Params={"Bucket": NAME, "Key": "job.json"}, ExpiresIn=300
        )
        status, _ = http_status(delete_url, method="DELETE")
        expect(status == 403, f"presigned DELETE outside the policy answered {status}")
    finally:
        moto_api("/moto-api/reset-auth", b"inf")
    return (
        "per-action policies, %20-encoded bodies, presigned GET/PUT "
        "(tampered/expired/out-of-policy refused)"
    )


# --- Clean-up --------------------------------------------------------------------------------


def cleanup() -> str:
    done = []
    if "replica" in state:
        rds = client("rds", REPLICA_REGION)
        rds.delete_db_instance(DBInstanceIdentifier=state["replica"], SkipFinalSnapshot=True)
        expect_error(
            "DBInstanceNotFound",
            lambda: rds.describe_db_instances(DBInstanceIdentifier=state["replica"]),
        )
        primary = client("rds").describe_db_instances(DBInstanceIdentifier=NAME)["DBInstances"][0]
        expect(
            not primary["ReadReplicaDBInstanceIdentifiers"],
            f"primary still lists {primary['ReadReplicaDBInstanceIdentifiers']}",
        )
        done.append("replica")
    if "db_arn" in state:
        rds = client("rds")
        rds.delete_db_instance(DBInstanceIdentifier=NAME, SkipFinalSnapshot=True)
        expect_error(
            "DBInstanceNotFound", lambda: rds.describe_db_instances(DBInstanceIdentifier=NAME)
        )
        done.append("primary")
    ec2 = client("ec2")
    for key in ("sg", "sg_spaced"):
        if key in state:
            ec2.delete_security_group(GroupId=state[key])
            done.append(key)
    if "bucket" in state:
        s3 = client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=NAME):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=NAME, Key=obj["Key"])
        s3.delete_bucket(Bucket=NAME)
        done.append("bucket")
    if "iam_user" in state:
        iam = client("iam")
        iam.delete_access_key(UserName=state["iam_user"], AccessKeyId=state["iam_key"])
        iam.delete_user_policy(UserName=state["iam_user"], PolicyName="smoke")
        iam.delete_user(UserName=state["iam_user"])
        done.append("iam user")
    return ", ".join(done)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iam-enforcement", action="store_true")
    args = parser.parse_args()
    print(f"smoke run {RUN} against {ENDPOINT}", flush=True)
    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("sts get-caller-identity", sts_identity),
        ("ec2 security group with a /32 ingress rule", security_group),
        ("ec2 describe-images: Ubuntu LTS by owner and name", ubuntu_ami),
        ("s3 private encrypted bucket", s3_bucket),
        ("s3 multipart upload and presigned GET", s3_multipart),
        ("rds postgres 16 primary (gp3, encrypted)", rds_primary),
        ("rds cross-region read replica in us-east-1", rds_replica),
        ("find resources by tag", find_by_tag),
    ]
    if args.iam_enforcement:
        steps.append(("iam enforcement with the fixes", iam_enforcement))
    else:
        skipped.append("iam enforcement")
        print(
            "skip  iam enforcement: the emulator was already running (enforcement is global)",
            flush=True,
        )
    try:
        for name, step in steps:
            if not check(name, step):
                break  # later steps build on earlier ones
    finally:
        check("clean up (replica delete exercises fix 1)", cleanup)
    print(f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

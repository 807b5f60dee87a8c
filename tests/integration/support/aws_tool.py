"""Independent look at the AWS emulator for the integration tests (boto3, not heroku2rds's code).

  inventory NAME REGION[,REGION]  every resource tagged heroku2rds:migration=NAME (NAME * for any
                                  value), as JSON
  user NAME POLICY_JSON_FILE      an IAM user with exactly that inline policy; prints its keys
  untagged-sg NAME REGION         a security group named NAME without any tag
  no-default-vpc REGION           deletes the region's default VPC (its subnets, gateway, groups)
  network REGION CIDR             a VPC with an internet gateway and one subnet per zone (three
                                  zones); prints {"vpc": ID, "subnets": [ID, ...]}
  get BUCKET KEY FILE             downloads an object into FILE; prints its size and metadata
  uploads BUCKET                  the bucket's unfinished multipart uploads (keys)
  secret ID                       the JSON a Secrets Manager secret holds
Credentials and endpoint come from the environment.
"""

import json
import sys

import boto3

TAG = "heroku2rds:migration"
ANY = "*"


def tagged(tags, name):
    return any(t.get("Key") == TAG and name in (ANY, t.get("Value")) for t in tags or [])


def rules(group):
    out = []
    for p in group.get("IpPermissions", []):
        for r in p.get("IpRanges", []):
            out.append(f"{p.get('FromPort')} {r['CidrIp']}")
        for r in p.get("Ipv6Ranges", []):
            out.append(f"{p.get('FromPort')} {r['CidrIpv6']}")
        for g in p.get("UserIdGroupPairs", []):
            out.append(f"{p.get('FromPort')} {g['GroupId']}")
    return sorted(out)


def inventory(name, regions):
    inv = {}
    for region in regions:
        ec2 = boto3.client("ec2", region_name=region)
        if name == ANY:
            flt = [{"Name": "tag-key", "Values": [TAG]}]
        else:
            flt = [{"Name": f"tag:{TAG}", "Values": [name]}]
        for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]:
            inv[f"{region}/sg/{g['GroupName']}"] = {
                "id": g["GroupId"],
                "vpc": g.get("VpcId"),
                "ingress": rules(g),
            }
        for r in ec2.describe_instances(Filters=flt)["Reservations"]:
            for i in r["Instances"]:
                if i["State"]["Name"] != "terminated":
                    inv[f"{region}/instance/{i['InstanceId']}"] = {
                        "type": i["InstanceType"],
                        "image": i["ImageId"],
                        "groups": [g["GroupId"] for g in i.get("SecurityGroups", [])],
                        "key": i.get("KeyName"),
                        "subnet": i.get("SubnetId"),
                        "vpc": i.get("VpcId"),
                    }
        for k in ec2.describe_key_pairs()["KeyPairs"]:
            if tagged(k.get("Tags"), name):
                inv[f"{region}/keypair/{k['KeyName']}"] = {}
        rds = boto3.client("rds", region_name=region)
        for d in rds.describe_db_instances()["DBInstances"]:
            if tagged(d.get("TagList"), name):
                inv[f"{region}/rds/{d['DBInstanceIdentifier']}"] = {
                    "class": d["DBInstanceClass"],
                    "encrypted": d.get("StorageEncrypted"),
                    "storage_type": d.get("StorageType"),
                    "publicly_accessible": d.get("PubliclyAccessible"),
                    "groups": [g["VpcSecurityGroupId"] for g in d.get("VpcSecurityGroups", [])],
                }
        for s in rds.describe_db_snapshots()["DBSnapshots"]:
            prefix = "heroku2rds-" if name == ANY else f"heroku2rds-{name}-"
            if s["DBSnapshotIdentifier"].startswith(prefix):
                inv[f"{region}/snapshot/{s['DBSnapshotIdentifier']}"] = {}
        for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
            t = rds.list_tags_for_resource(ResourceName=g["DBSubnetGroupArn"])["TagList"]
            if tagged(t, name):
                inv[f"{region}/subnetgroup/{g['DBSubnetGroupName']}"] = {
                    "vpc": g["VpcId"],
                    "subnets": sorted(s["SubnetIdentifier"] for s in g["Subnets"]),
                }
        for g in rds.describe_db_parameter_groups()["DBParameterGroups"]:
            t = rds.list_tags_for_resource(ResourceName=g["DBParameterGroupArn"])["TagList"]
            if tagged(t, name):
                inv[f"{region}/paramgroup/{g['DBParameterGroupName']}"] = {}
        sm = boto3.client("secretsmanager", region_name=region)
        for s in sm.list_secrets()["SecretList"]:
            if tagged(s.get("Tags"), name):
                inv[f"{region}/secret/{s['Name']}"] = {}
    s3 = boto3.client("s3", region_name=regions[0])
    for b in s3.list_buckets()["Buckets"]:
        try:
            t = s3.get_bucket_tagging(Bucket=b["Name"])["TagSet"]
        except Exception:  # noqa: BLE001 - untagged buckets are not ours
            continue
        if tagged(t, name):
            objs = s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])
            pab = s3.get_public_access_block(Bucket=b["Name"])["PublicAccessBlockConfiguration"]
            enc = s3.get_bucket_encryption(Bucket=b["Name"])["ServerSideEncryptionConfiguration"]
            inv[f"s3/{b['Name']}"] = {
                "objects": sorted(o["Key"] for o in objs),
                "public_access_blocked": all(pab.values()),
                "encryption": enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
            }
    return inv


def user(name, policy_file):
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName=name)
    with open(policy_file) as f:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=f.read())
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def get(bucket, key, path):
    s3 = boto3.client("s3")
    s3.download_file(bucket, key, path)
    head = s3.head_object(Bucket=bucket, Key=key)
    return {"size": head["ContentLength"], "metadata": head.get("Metadata", {})}


def put(bucket, key, text):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    return {"key": key}


def uploads(bucket):
    s3 = boto3.client("s3")
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def secret(secret_id):
    sm = boto3.client("secretsmanager")
    return json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])


def untagged_sg(name, region):
    ec2 = boto3.client("ec2", region_name=region)
    return {"id": ec2.create_security_group(GroupName=name, Description="not heroku2rds")["GroupId"]}


def no_default_vpc(region):
    ec2 = boto3.client("ec2", region_name=region)
    for vpc in ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]:
        vid = vpc["VpcId"]
        for sn in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vid]}])["Subnets"]:
            ec2.delete_subnet(SubnetId=sn["SubnetId"])
        igws = ec2.describe_internet_gateways(
            Filters=[{"Name": "attachment.vpc-id", "Values": [vid]}]
        )["InternetGateways"]
        for igw in igws:
            ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vid)
            ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])
        groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vid]}])
        for g in groups["SecurityGroups"]:
            if g["GroupName"] != "default":
                ec2.delete_security_group(GroupId=g["GroupId"])
        ec2.delete_vpc(VpcId=vid)
    return {"default_vpcs": len(ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"])}


def network(region, cidr):
    ec2 = boto3.client("ec2", region_name=region)
    vid = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vid)
    base = cidr.split("/")[0].rsplit(".", 2)[0]
    subnets = []
    for i, zone in enumerate("abc"):
        sn = ec2.create_subnet(
            VpcId=vid, CidrBlock=f"{base}.{i * 16}.0/20", AvailabilityZone=f"{region}{zone}"
        )
        subnets.append(sn["Subnet"]["SubnetId"])
    return {"vpc": vid, "subnets": subnets}


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "inventory":
        print(json.dumps(inventory(sys.argv[2], sys.argv[3].split(",")), sort_keys=True))
    elif cmd == "user":
        print(json.dumps(user(sys.argv[2], sys.argv[3])))
    elif cmd == "get":
        print(json.dumps(get(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif cmd == "put":
        print(json.dumps(put(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif cmd == "uploads":
        print(json.dumps(uploads(sys.argv[2])))
    elif cmd == "secret":
        print(json.dumps(secret(sys.argv[2])))
    elif cmd == "no-default-vpc":
        print(json.dumps(no_default_vpc(sys.argv[2])))
    elif cmd == "network":
        print(json.dumps(network(sys.argv[2], sys.argv[3])))
    elif cmd == "untagged-sg":
        print(json.dumps(untagged_sg(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(f"unknown command {cmd}")

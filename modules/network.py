"""The existing VPC and private subnets, and the two security groups between the functions and the database."""

from __future__ import annotations

from modules.cdk import (
    Construct,
    DataAwsSubnet,
    DataAwsVpc,
    SecurityGroup,
    VpcSecurityGroupEgressRule,
    VpcSecurityGroupIngressRule,
)
from modules.settings import Settings


class Network(Construct):
    """Looks the VPC and subnets up by ID (a typo fails the plan, not the apply) and owns lambda_sg/rds_sg.

    No inline rules: each rule is its own resource, so a change shows as one rule in the plan.
    """

    def __init__(self, scope: Construct, id_: str, settings: Settings) -> None:
        super().__init__(scope, id_)
        prefix = settings.name_prefix
        self.vpc = DataAwsVpc(self, "vpc", id=settings.network.vpc_id)
        self.subnets = [
            DataAwsSubnet(self, f"private_subnet_{index}", id=subnet_id, vpc_id=self.vpc.id)
            for index, subnet_id in enumerate(settings.network.private_subnet_ids)
        ]
        self.subnet_ids = [subnet.id for subnet in self.subnets]

        net = settings.network
        # A changed description or VPC replaces a group. The replacement is created first (the functions and
        # the database move to it, then the old group goes), so names are prefixes with a suffix Terraform
        # makes unique: a fixed name would collide with the group it replaces (InvalidGroup.Duplicate).
        self.lambda_sg = SecurityGroup(
            self, "lambda_sg", name_prefix=f"{prefix}-lambda-", vpc_id=self.vpc.id,
            description=net.lambda_sg_description or f"{prefix} pipeline functions: egress to the database and HTTPS only",
            tags={"Name": f"{prefix}-lambda-sg"}, lifecycle={"create_before_destroy": True})
        self.rds_sg = SecurityGroup(
            self, "rds_sg", name_prefix=f"{prefix}-rds-", vpc_id=self.vpc.id,
            description=net.rds_sg_description or f"{prefix} PostgreSQL: ingress from the pipeline functions only",
            tags={"Name": f"{prefix}-rds-sg"}, lifecycle={"create_before_destroy": True})

        port = settings.database.port
        # The rules follow their groups: when a group is replaced, its rules are created on the new group before
        # the old ones go, so the path from the functions to the database never lacks a rule while they move.
        # (Delete-then-create would remove the old groups' rules first.) A new rule sits on another group, or
        # differs, so it never duplicates the one it replaces.
        keep_path = {"create_before_destroy": True}
        VpcSecurityGroupIngressRule(
            self, "rds_from_lambda", security_group_id=self.rds_sg.id,
            referenced_security_group_id=self.lambda_sg.id, ip_protocol="tcp", from_port=port, to_port=port,
            description="PostgreSQL from the pipeline functions", lifecycle=keep_path)
        VpcSecurityGroupEgressRule(
            self, "lambda_to_rds", security_group_id=self.lambda_sg.id,
            referenced_security_group_id=self.rds_sg.id, ip_protocol="tcp", from_port=port, to_port=port,
            description="PostgreSQL to the pipeline database", lifecycle=keep_path)
        for index, cidr in enumerate(settings.network.https_egress_cidrs):
            VpcSecurityGroupEgressRule(
                self, f"lambda_https_{index}", security_group_id=self.lambda_sg.id, cidr_ipv4=cidr,
                ip_protocol="tcp", from_port=443, to_port=443,
                description="HTTPS to PagerDuty and AWS APIs (Secrets Manager, X-Ray)", lifecycle=keep_path)

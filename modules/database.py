"""PostgreSQL on RDS: private, encrypted, TLS-only, IAM auth on, master password owned by RDS in Secrets Manager."""

from __future__ import annotations

from modules.cdk import (
    CloudwatchLogGroup,
    Construct,
    DataResource,
    DbInstance,
    DbParameterGroup,
    DbParameterGroupParameter,
    DbSubnetGroup,
    Fn,
    IamRole,
    IamRolePolicyAttachment,
)
from modules.iam import assume_role_policy
from modules.network import Network
from modules.settings import Settings


class Database(Construct):
    """`manage_master_user_password` makes RDS generate and store the password, so it never enters
    Terraform state; the functions read it from the secret at run time."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, network: Network, kms_key_arn: str,
                 partition: str) -> None:
        super().__init__(scope, id_)
        db = settings.database
        identifier = f"{settings.name_prefix}-postgres"

        subnet_group = DbSubnetGroup(
            self, "subnet_group", name=f"{settings.name_prefix}-db-subnets", subnet_ids=network.subnet_ids,
            description=f"{settings.name_prefix} PostgreSQL in the private subnets")
        major = db.engine_version.split(".")[0]
        # Replaced (not updated) when its family or description changes: created first under a new name from
        # the prefix, the instance switched to it, then the old group deleted.
        parameter_group = DbParameterGroup(
            self, "parameter_group", name_prefix=f"{settings.name_prefix}-postgres{major}-",
            family=f"postgres{major}",
            description=db.parameter_group_description
            or f"{settings.name_prefix} PostgreSQL {major}: TLS only, slow and DDL statements logged",
            parameter=[
                DbParameterGroupParameter(name="rds.force_ssl", value="1"),
                DbParameterGroupParameter(name="log_min_duration_statement",
                                          value=str(db.log_min_duration_statement_ms)),
                DbParameterGroupParameter(name="log_statement", value="ddl"),
            ],
            lifecycle={"create_before_destroy": True})
        # Created before the instance so exported logs get our retention and key, not RDS's defaults.
        log_groups = [
            CloudwatchLogGroup(self, f"log_group_{export.replace('-', '_')}",
                               name=f"/aws/rds/instance/{identifier}/{export}",
                               retention_in_days=settings.log_retention_days, kms_key_id=kms_key_arn)
            for export in db.log_exports
        ]
        monitoring_role_arn = None
        if db.monitoring_interval_seconds:
            monitoring_role = IamRole(
                self, "monitoring_role", name=f"{settings.name_prefix}-rds-monitoring",
                assume_role_policy=assume_role_policy("monitoring.rds.amazonaws.com"))
            IamRolePolicyAttachment(
                self, "monitoring_policy", role=monitoring_role.name,
                policy_arn=f"arn:{partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole")
            monitoring_role_arn = monitoring_role.arn

        self.instance = DbInstance(
            self, "instance",
            identifier=identifier,
            engine="postgres",
            engine_version=db.engine_version,
            instance_class=db.instance_class,
            allocated_storage=db.allocated_storage_gb,
            max_allocated_storage=db.max_allocated_storage_gb,
            storage_type=db.storage_type,
            storage_encrypted=True,
            kms_key_id=kms_key_arn,
            db_name=db.database_name,
            username=db.master_username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=kms_key_arn,
            iam_database_authentication_enabled=True,
            port=db.port,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[network.rds_sg.id],
            parameter_group_name=parameter_group.name,
            publicly_accessible=False,
            multi_az=db.multi_az,
            backup_retention_period=db.backup_retention_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=kms_key_arn,
            performance_insights_retention_period=db.performance_insights_retention_days,
            monitoring_interval=db.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role_arn,
            enabled_cloudwatch_logs_exports=list(db.log_exports),
            deletion_protection=db.deletion_protection,
            skip_final_snapshot=not db.final_snapshot,
            final_snapshot_identifier=(f"{identifier}-final-{self._snapshot_suffix(identifier)}"
                                       if db.final_snapshot else None),
            depends_on=log_groups,
        )
        self.identifier = self.instance.identifier  # what the AWS/RDS metrics' DBInstanceIdentifier names
        self.address = self.instance.address
        self.port = self.instance.port
        self.secret_arn = self.instance.master_user_secret.get(0).secret_arn
        self.resource_id = self.instance.resource_id  # DbiResourceId: what rds-db:connect ARNs name

    def _snapshot_suffix(self, identifier: str) -> str:
        """Eight hex digits, new for every instance this stack creates and fixed for its lifetime.

        Snapshot names are unique per account and region, and a final snapshot outlives its instance: a fixed
        `<id>-final` makes the second teardown of a rebuilt environment fail (DBSnapshotAlreadyExists).
        terraform_data's id is a random UUID chosen when it is created (the built-in resource, no provider).
        """
        generation = DataResource(self, "instance_generation", triggers_replace={"identifier": identifier})
        return Fn.substr(Fn.replace(generation.id, "-", ""), 0, 8)

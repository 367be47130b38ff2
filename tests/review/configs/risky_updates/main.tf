# Security- and data-relevant updates the plan summary must flag, next to routine
# ones it must not. Applied into moto's server with v1/settings.tf, then planned
# with v2/settings.tf: the two differ only in the locals that choose roles,
# groups, keys and settings; the resources are the same in both.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}

provider "aws" {
  region = "us-east-1"
}

resource "aws_vpc" "main" {
  cidr_block = "10.20.0.0/16"
}

resource "aws_subnet" "private" {
  for_each          = { a = "10.20.1.0/24", b = "10.20.2.0/24", c = "10.20.3.0/24" }
  vpc_id            = aws_vpc.main.id
  cidr_block        = each.value
  availability_zone = "us-east-1${each.key}"
}

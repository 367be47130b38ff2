"""Construct modules of the stepfuncproject CDKTF app: one concern per module, composed in stack.py."""

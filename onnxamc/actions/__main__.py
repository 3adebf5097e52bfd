"""`python -m onnxamc.actions`: print the policy field table (the README's)."""

from onnxamc.actions import field_table

print(field_table())

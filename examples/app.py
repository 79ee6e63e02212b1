"""A small program for `cached-exec --after-init --preload json,decimal python3 examples/app.py`.

Its output is the same whether python3 started cold or resumed after the imports.
"""
import decimal
import json
import sys

numbers = [decimal.Decimal(a) for a in sys.argv[1:]] or [decimal.Decimal("0")]
print(json.dumps({"args": sys.argv[1:], "sum": str(sum(numbers))}))

#!/bin/bash
# A small deterministic script for `cached-exec bash examples/hello.sh`.
# Its output is the same whether bash started cold or was restored from an image.

greet() {
  printf 'Hello, %s!\n' "$1"
}

greet "${1:-world}"
echo "called as: $(basename "$0"), with $# argument(s)"
i=0
for arg in "$@"; do
  i=$((i + 1))
  printf '  argv[%d] = [%s]\n' "$i" "$arg"
done

sum=0
for n in 1 2 3 4 5 6 7 8 9 10; do
  sum=$((sum + n * n))
done
echo "sum of squares 1..10 = $sum"

fib() {
  local a=0 b=1 k
  for ((k = 0; k < $1; k++)); do
    local t=$((a + b))
    a=$b
    b=$t
  done
  echo "$a"
}
echo "fib(30) = $(fib 30)"

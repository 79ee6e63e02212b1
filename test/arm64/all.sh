# The aarch64 post-link suites in one boot:
#   npm run test:arm64 -- --launcher --script test/arm64/all.sh   (and --kernel 16k)
# postlink.sh first: its refusal checks expect an empty image cache.
. /cx/test/arm64/postlink.sh
. /cx/test/arm64/restore.sh

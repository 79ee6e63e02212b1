# The aarch64 suites in one boot (post-link, then post-init):
#   npm run test:arm64 -- --launcher --script test/arm64/all.sh   (and --kernel 16k)
# postlink.sh first: its refusal checks expect an empty image cache.
. /cx/test/arm64/postlink.sh
. /cx/test/arm64/restore.sh
. /cx/test/arm64/postinit.sh

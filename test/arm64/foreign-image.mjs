#!/usr/bin/env node
/**
 * Writes an image for another machine at IMAGE: a well-formed image (the
 * checksum over the metadata recomputed) whose header says another
 * architecture or page size, so that the header field alone is what a
 * launcher can object to. Used by test/arm64/postlink.sh in the guest (no
 * x86_64 image can be taken there) and runnable on the host too:
 *
 *   node test/arm64/foreign-image.mjs IMAGE arch|page_size VALUE
 */
import * as fs from 'node:fs';
import process from 'node:process';
import { serializeImage } from '../../dist/image/format.js';
import { decodeStruct } from '../../dist/image/codec.js';
import { HEADER, Prot, Src, StateFlag, VdsoKind, hash64, layout } from '../../dist/image/schema.js';

const [image, field, value] = process.argv.slice(2);
if (!image || !['arch', 'page_size'].includes(field) || !/^\d+$/.test(value ?? '')) {
  process.stderr.write('usage: foreign-image.mjs IMAGE arch|page_size VALUE\n');
  process.exit(2);
}
const page = 65536; // a multiple of every page size
const b = serializeImage({
  createdNs: BigInt(Date.now()) * 1_000_000n,
  key: {
    euid: 0, exePath: '/nonexistent', exeDev: 0n, exeIno: 0n, exeSize: 0n, exeMtimeSec: 0n, exeMtimeNsec: 0,
    exeCtimeSec: 0n, exeCtimeNsec: 0, pathEnv: '', kernelRelease: '',
  },
  files: [],
  regions: [{ addr: 0x10000000n, len: BigInt(page), prot: Prot.READ, source: Src.ZERO, file: 0, offset: 0n, flags: 0 }],
  slots: [],
  state: {
    entry: 0x10000040n, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0,
    rseqSig: 0, startCode: 0x10000000n, endCode: 0x10001000n, startData: 0x10001000n, endData: 0x10002000n,
    startBrk: 0x20000000n, brk: 0x20000000n, vdsoBase: 0x7fff10000000n, atPhdr: 0x10000040n, atPhnum: 1n,
    atEntry: 0x10000040n, atBase: 0n, flags: StateFlag.HAVE_FS_BASE, comm: 'foreign',
  },
  vdso: [{ offset: 0n, size: BigInt(page), kind: VdsoKind.VDSO }],
});
const off = (n) => layout(HEADER).fields.find((f) => f.name === n).offset;
b.writeUInt32LE(Number(value), off(field));
const meta = Number(decodeStruct(HEADER, b, 0).meta_size);
b.writeBigUInt64LE(0n, off('checksum'));
b.writeBigUInt64LE(hash64(b.subarray(0, meta)), off('checksum'));
const tmp = `${image}.${process.pid}.tmp`;
fs.writeFileSync(tmp, b, { mode: 0o600 });
fs.renameSync(tmp, image);

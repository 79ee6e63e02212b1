/** Generic little-endian struct codec driven by the schema definitions. */
import { layout, type StructDef } from './schema.js';

export type StructValue = Record<string, bigint | number>;

export function encodeStruct(def: StructDef, value: StructValue, out?: Buffer, at = 0): Buffer {
  const l = layout(def);
  const buf = out ?? Buffer.alloc(l.size);
  for (const fd of l.fields) {
    const v = value[fd.name] ?? 0;
    const o = at + fd.offset;
    switch (fd.type) {
      case 'u8': buf.writeUInt8(Number(v), o); break;
      case 'u16': buf.writeUInt16LE(Number(v), o); break;
      case 'u32': buf.writeUInt32LE(Number(v) >>> 0, o); break;
      case 'u64': buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), o); break;
      case 'i64': buf.writeBigInt64LE(BigInt.asIntN(64, BigInt(v)), o); break;
    }
  }
  return buf;
}

/** Decodes a struct; 64-bit fields come back as bigint, others as number. */
export function decodeStruct(def: StructDef, buf: Buffer, at = 0): Record<string, bigint | number> {
  const l = layout(def);
  if (at + l.size > buf.length) throw new Error(`${def.name} at ${at} runs past the end (${buf.length} bytes)`);
  const out: Record<string, bigint | number> = {};
  for (const fd of l.fields) {
    const o = at + fd.offset;
    switch (fd.type) {
      case 'u8': out[fd.name] = buf.readUInt8(o); break;
      case 'u16': out[fd.name] = buf.readUInt16LE(o); break;
      case 'u32': out[fd.name] = buf.readUInt32LE(o); break;
      case 'u64': out[fd.name] = buf.readBigUInt64LE(o); break;
      case 'i64': out[fd.name] = buf.readBigInt64LE(o); break;
    }
  }
  return out;
}

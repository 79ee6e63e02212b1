/**
 * A writer for the kernel's initramfs format (cpio "newc"), so the guest's
 * initramfs needs no cpio program and no root: owners, modes and device nodes
 * (/dev/console, which the kernel opens before any devtmpfs) are written as we
 * say, not as the host's files happen to be.
 */
import { Buffer } from 'node:buffer';
import * as fs from 'node:fs';

const S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

export class CpioWriter {
  /** @param {string} file written to `${file}.tmp` and renamed by close() */
  constructor(file) {
    this.target = file;
    this.tmp = `${file}.${process.pid}.tmp`;
    this.fd = fs.openSync(this.tmp, 'w', 0o644);
    this.pos = 0;
    this.ino = 1;
    this.seen = new Set();
    this.bytes = 0;
  }

  write(buf) {
    let off = 0;
    while (off < buf.length) off += fs.writeSync(this.fd, buf, off, buf.length - off, this.pos + off);
    this.pos += buf.length;
  }

  pad() {
    const n = (4 - (this.pos % 4)) % 4;
    if (n) this.write(Buffer.alloc(n));
  }

  header(name, mode, size, { uid = 0, gid = 0, mtime = 0, rmajor = 0, rminor = 0 } = {}) {
    const nameBuf = Buffer.from(`${name}\0`);
    const hex = (v) => (v >>> 0).toString(16).padStart(8, '0');
    const fields = [this.ino++, mode, uid, gid, 1, mtime, size, 0, 0, rmajor, rminor, nameBuf.length, 0];
    this.write(Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii'));
    this.write(nameBuf);
    this.pad();
  }

  /** Parent directories are added once, as root-owned 0755, when missing. */
  parents(name) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!this.seen.has(dir)) this.dir(dir);
    }
  }

  dir(name, mode = 0o755, owner = {}) {
    name = clean(name);
    this.parents(name);
    this.seen.add(name);
    this.header(name, S_IFDIR | mode, 0, owner);
  }

  data(name, content, mode = 0o644, owner = {}) {
    name = clean(name);
    this.parents(name);
    this.seen.add(name);
    const buf = Buffer.isBuffer(content) ? content : Buffer.from(content);
    this.header(name, S_IFREG | mode, buf.length, owner);
    this.write(buf);
    this.pad();
    this.bytes += buf.length;
  }

  symlink(name, target, owner = {}) {
    name = clean(name);
    this.parents(name);
    this.seen.add(name);
    const buf = Buffer.from(target);
    this.header(name, S_IFLNK | 0o777, buf.length, owner);
    this.write(buf);
    this.pad();
  }

  chardev(name, major, minor, mode = 0o600) {
    name = clean(name);
    this.parents(name);
    this.seen.add(name);
    this.header(name, S_IFCHR | mode, 0, { rmajor: major, rminor: minor });
  }

  /** A host file, streamed (node's binary is 100 MB); keeps its mode and owner. */
  file(name, hostPath, st = fs.lstatSync(hostPath)) {
    name = clean(name);
    this.parents(name);
    this.seen.add(name);
    const owner = { uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
    this.header(name, S_IFREG | (st.mode & 0o7777), st.size, owner);
    const src = fs.openSync(hostPath, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      let left = st.size, at = 0;
      while (left > 0) {
        const n = fs.readSync(src, buf, 0, Math.min(buf.length, left), at);
        if (n <= 0) throw new Error(`${hostPath}: file shrank while archiving`);
        this.write(n === buf.length ? buf : buf.subarray(0, n));
        left -= n;
        at += n;
      }
    } finally {
      fs.closeSync(src);
    }
    this.pad();
    this.bytes += st.size;
  }

  close() {
    this.header('TRAILER!!!', 0, 0);
    // The kernel reads archives in 512-byte blocks; pad like cpio(1) does.
    const n = (512 - (this.pos % 512)) % 512;
    if (n) this.write(Buffer.alloc(n));
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    fs.renameSync(this.tmp, this.target);
  }

  abort() {
    try { fs.closeSync(this.fd); } catch { /* already closed */ }
    fs.rmSync(this.tmp, { force: true });
  }
}

function clean(name) {
  return name.replace(/^\/+/, '').replace(/\/+$/, '');
}

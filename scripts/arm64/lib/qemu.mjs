/**
 * Boots the guest under qemu-system-aarch64 (TCG) and follows its serial
 * console: the @@CX markers of scripts/arm64/guest/lib.sh become checks,
 * notes and files; everything is also kept in console.log.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Buffer } from 'node:buffer';
import { clearTimeout, setTimeout } from 'node:timers';

export function qemuArgs({ image, initrd, disks, mem, smp, cpu }) {
  // snapshot=on: the guest writes to a temporary overlay, never to the cached image.
  const drives = Object.entries(disks).flatMap(([serial, file], i) => [
    '-drive', `file=${file},format=raw,if=none,id=d${i},snapshot=on`,
    '-device', `virtio-blk-device,drive=d${i},serial=${serial}`,
  ]);
  return [
    '-M', 'virt', '-cpu', cpu, '-smp', String(smp), '-m', String(mem),
    // No network, no display: the UART on our stdio and the two disks are the only devices.
    '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', image, '-initrd', initrd, ...drives,
    '-append', 'console=ttyAMA0 panic=-1 quiet loglevel=3',
  ];
}

/**
 * Runs qemu until the guest powers off or the deadline passes. Returns
 * { checks, notes, files, bootMs, guestBootS, done, doneRc, timedOut, exit }.
 * onLine(line) sees every console line as it comes.
 */
export function boot(opts, runDir, timeoutMs, onLine) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const log = fs.openSync(path.join(runDir, 'console.log'), 'w');
    // stdin is a pipe we never write: qemu's -serial stdio must not read the caller's terminal.
    const child = spawn(opts.qemu, qemuArgs(opts), { stdio: ['pipe', 'pipe', 'pipe'] });
    const res = { checks: [], notes: [], files: [], bootMs: null, guestBootS: null, done: false, doneRc: null, timedOut: false, exit: null };
    let current = null, file = null, pending = '';
    const timer = setTimeout(() => {
      res.timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);

    const line = (raw) => {
      const l = raw.replace(/\r$/, '');
      fs.writeSync(log, `${l}\n`);
      if (file) {
        if (l === `@@CX FILE-END ${file.name}`) {
          const out = path.join(runDir, path.basename(file.name));
          fs.writeFileSync(out, Buffer.from(file.b64.join(''), 'base64'));
          res.files.push(out);
          file = null;
        } else file.b64.push(l);
        return;
      }
      const m = /^@@CX (\S+) ?(.*)$/.exec(l);
      if (!m) {
        if (current) current.output.push(l);
        onLine?.(l);
        return;
      }
      const [, what, rest] = m;
      if (what === 'BOOT') {
        res.bootMs = Date.now() - t0;
        res.guestBootS = Number(rest);
      } else if (what === 'BEGIN') {
        current = { name: rest, output: [], rc: null, ms: null, startedMs: Date.now() - t0 };
        res.checks.push(current);
      } else if (what === 'END') {
        const [name, rc, ms] = rest.split(' ');
        const c = res.checks.findLast((x) => x.name === name);
        if (c) {
          c.rc = Number(rc);
          c.ms = Number(ms);
        }
        current = null;
      } else if (what === 'NOTE') {
        const sp = rest.indexOf(' ');
        res.notes.push([sp < 0 ? rest : rest.slice(0, sp), sp < 0 ? '' : rest.slice(sp + 1)]);
      } else if (what === 'FILE') {
        file = { name: rest.split(' ')[0], b64: [] };
      } else if (what === 'DONE') {
        res.done = true;
        res.doneRc = Number(rest);
      }
      onLine?.(l);
    };
    const feed = (chunk) => {
      pending += chunk.toString('latin1');
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        line(pending.slice(0, i));
        pending = pending.slice(i + 1);
      }
    };
    child.stdout.on('data', feed);
    child.stderr.on('data', (d) => fs.writeSync(log, `[qemu stderr] ${d}`));
    child.on('error', (e) => {
      res.exit = `spawn failed: ${e.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (pending) line(pending);
      res.exit ??= signal ? `signal ${signal}` : `exit ${code}`;
      res.totalMs = Date.now() - t0;
      fs.closeSync(log);
      resolve(res);
    });
  });
}

// Runs the mcp-oauth-proxy binary as a child process with a clean
// environment (only what the test sets, plus PATH) in an empty temporary
// working directory (so no `.env` is picked up), logs to artifacts/.

import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

/**
 * A free loopback port for a server the suite starts later: bound then
 * released, picked below the kernel's ephemeral range (32768-60999 on Linux)
 * so that no outgoing connection made meanwhile (the browser's, a proxy's to
 * its upstream) can be given it before the server binds it.
 */
export async function freePort() {
    for (let attempt = 0; attempt < 100; attempt++) {
        const port = 20000 + Math.floor(Math.random() * 12000);
        if (await canListen(port)) return port;
    }
    throw new Error('no free port found in 20000-31999 after 100 tries');
}

function canListen(port) {
    return new Promise(resolve => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
}

const running = new Set();

/** Kills every proxy still running (used on signals). Synchronous. */
export function killAllProxies() {
    for (const child of running) {
        try {
            child.kill('SIGKILL');
        } catch {
            // gone
        }
    }
}

/**
 * @param {object} o
 * @param {string} o.name     label for the log file
 * @param {string} o.binary
 * @param {number} o.port
 * @param {Record<string,string>} o.env  OAUTH_PROXY_* settings (BIND/BASE_URL are added)
 * @param {string} o.logDir
 */
export async function startProxy({ name, binary, port, env, logDir }) {
    const base = `http://127.0.0.1:${port}`;
    const cwd = mkdtempSync(join(tmpdir(), `e2e-proxy-${name}-`));
    const logPath = join(logDir, `proxy-${name}.log`);
    const log = createWriteStream(logPath);
    const child = spawn(binary, [], {
        cwd,
        env: {
            PATH: process.env.PATH || '/usr/bin:/bin',
            RUST_LOG: 'info',
            OAUTH_PROXY_BIND: `127.0.0.1:${port}`,
            OAUTH_PROXY_BASE_URL: base,
            ...env
        },
        stdio: ['ignore', 'pipe', 'pipe']
    });
    running.add(child);
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    let exited = null;
    child.on('exit', (code, signal) => {
        exited = { code, signal };
        running.delete(child);
    });

    const tail = () => {
        try {
            return readFileSync(logPath, 'utf8').trim().split('\n').slice(-8).join(' | ');
        } catch {
            return '';
        }
    };

    const deadline = Date.now() + 30000;
    for (let i = 0; i < 300 && Date.now() < deadline; i++) {
        if (exited) throw new Error(`proxy ${name} exited at start-up (${JSON.stringify(exited)}): ${tail()}`);
        try {
            const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
            if (res.ok) break;
        } catch {
            // not yet listening
        }
        await new Promise(r => setTimeout(r, 100));
        if (Date.now() >= deadline || i === 299) {
            child.kill('SIGKILL');
            throw new Error(`proxy ${name} did not answer /healthz within 30 s: ${tail()}`);
        }
    }

    return {
        name,
        base,
        port,
        mcpUrl: `${base}/mcp`,
        logPath,
        async stop() {
            if (!exited) {
                child.kill('SIGTERM');
                const gone = new Promise(r => child.once('exit', r));
                const timer = new Promise(r => setTimeout(r, 5000));
                await Promise.race([gone, timer]);
                if (!exited) child.kill('SIGKILL');
            }
            log.end();
            rmSync(cwd, { recursive: true, force: true });
        }
    };
}

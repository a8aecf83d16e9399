// Client ID Metadata Documents served the way a client's vendor serves them:
// over https, here on 127.0.0.1, with a certificate from a test CA made for
// each run by the `openssl` command (Node.js has no X.509 generator). The
// proxy trusts that CA through OAUTH_PROXY_EXTRA_CA_FILE and may reach
// 127.0.0.1 through OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS=true.

import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function openssl(args, cwd) {
    try {
        execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
    } catch (e) {
        const said = `${e.stderr ?? ''}`.trim().split('\n').slice(-3).join(' | ');
        throw new Error(`openssl ${args[0]} failed (${e.code === 'ENOENT' ? 'no openssl command: apt-get install -y openssl' : said})`);
    }
}

/**
 * A test CA (P-256, 1 day) and a server certificate it signs for IP 127.0.0.1
 * (and DNS localhost). Returns the PEM texts and the CA file's path.
 */
export function makeTestCa() {
    const dir = mkdtempSync(join(tmpdir(), 'e2e-cimd-ca-'));
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(
        [
            'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1',
            '-subj', '/CN=mcp-oauth-proxy e2e test CA',
            '-addext', 'basicConstraints=critical,CA:TRUE',
            '-addext', 'keyUsage=critical,keyCertSign,cRLSign'
        ],
        dir
    );
    openssl(['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], dir);
    writeFileSync(
        join(dir, 'server.ext'),
        [
            'basicConstraints=critical,CA:FALSE',
            'keyUsage=critical,digitalSignature',
            'extendedKeyUsage=serverAuth',
            'subjectAltName=IP:127.0.0.1,DNS:localhost'
        ].join('\n')
    );
    openssl(
        [
            'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
            '-out', 'server.pem', '-days', '1', '-extfile', 'server.ext'
        ],
        dir
    );
    return {
        dir,
        caFile: join(dir, 'ca.pem'),
        ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
        cert: readFileSync(join(dir, 'server.pem'), 'utf8'),
        key: readFileSync(join(dir, 'server.key'), 'utf8'),
        remove() {
            rmSync(dir, { recursive: true, force: true });
        }
    };
}

/**
 * An https server on 127.0.0.1 (ephemeral port) with a certificate of a fresh
 * test CA. `serveJson(path, doc)` publishes a document; every request is
 * recorded (`hits(path)`, `requests`).
 */
export async function startDocumentHost() {
    const pki = makeTestCa();
    const documents = new Map();
    const requests = [];
    const server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
        const path = new URL(req.url || '/', 'https://127.0.0.1').pathname;
        requests.push({ method: req.method, path, at: Date.now(), userAgent: req.headers['user-agent'] || '' });
        const doc = documents.get(path);
        if (req.method !== 'GET' || doc === undefined) {
            res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
            return;
        }
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' });
        res.end(JSON.stringify(doc));
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
    });
    const origin = `https://127.0.0.1:${server.address().port}`;
    return {
        origin,
        caFile: pki.caFile,
        ca: pki.ca,
        requests,
        url(path) {
            return `${origin}${path}`;
        },
        serveJson(path, doc) {
            documents.set(path, doc);
        },
        hits(path) {
            return requests.filter(r => r.path === path).length;
        },
        async close() {
            server.closeAllConnections?.();
            await new Promise(resolve => server.close(() => resolve()));
            pki.remove();
        }
    };
}

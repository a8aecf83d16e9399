// The browser: Debian's chromium (/usr/bin/chromium) driven by playwright-core.
// Never downloads a browser. Each "browser" of a scenario is one context
// (own cookies), so the proxy's transaction and remembered-consent cookies and
// the upstream's session behave as for one person's browser.

import { chromium } from 'playwright-core';
import { ACCOUNT } from './upstream.mjs';

export const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 15000;
const FLOW_TIMEOUT_MS = 60000;

export async function launchBrowser() {
    // launch() gives every run a fresh, temporary user-data dir.
    return chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        timeout: 30000,
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync'
        ]
    });
}

export async function newContext(browser) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US' });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    return context;
}

async function clickAndWait(page, selector) {
    const navigated = page.waitForEvent('framenavigated', {
        predicate: f => f === page.mainFrame(),
        timeout: STEP_TIMEOUT_MS
    });
    await page.click(selector, { timeout: STEP_TIMEOUT_MS });
    await navigated;
    await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
}

async function bodySnippet(page) {
    try {
        return (await page.locator('body').innerText({ timeout: 2000 })).replace(/\s+/g, ' ').slice(0, 300);
    } catch {
        return '';
    }
}

/**
 * Drives one authorization in `context`, from the authorization URL to the
 * client's loopback redirect listener.
 *
 * @param {object} o
 * @param {import('playwright-core').BrowserContext} o.context
 * @param {URL|string} o.url          the authorization URL the SDK produced
 * @param {string} o.proxyOrigin
 * @param {string} o.upstreamOrigin
 * @param {string} o.callbackOrigin
 * @param {'approve'|'deny'} [o.decision]  what to press on our consent page
 * @param {(page) => Promise<void>} [o.onConsentPage]  checks / screenshot before deciding
 * @param {{login: string, password: string}} [o.account]  who signs in at the upstream (default ACCOUNT)
 * @returns {Promise<{steps: string[], proxyResponses: Array<{url: string, status: number}>, finalUrl: string}>}
 */
export async function authorizeInBrowser({
    context,
    url,
    proxyOrigin,
    upstreamOrigin,
    callbackOrigin,
    decision = 'approve',
    onConsentPage,
    account = ACCOUNT
}) {
    const page = await context.newPage();
    const steps = [];
    const proxyResponses = [];
    page.on('response', r => {
        if (r.url().startsWith(proxyOrigin) && r.request().isNavigationRequest()) {
            proxyResponses.push({ url: r.url(), status: r.status() });
        }
    });
    const deadline = Date.now() + FLOW_TIMEOUT_MS;
    try {
        await page.goto(String(url), { waitUntil: 'load', timeout: STEP_TIMEOUT_MS });
        for (let i = 0; i < 12; i++) {
            if (Date.now() > deadline) throw new Error(`browser flow took longer than ${FLOW_TIMEOUT_MS} ms`);
            const here = new URL(page.url());
            if (here.origin === callbackOrigin) {
                steps.push('client-callback');
                return { steps, proxyResponses, finalUrl: page.url() };
            }
            if (here.origin === proxyOrigin && (await page.locator('form.decision').count()) > 0) {
                steps.push('proxy-consent');
                if (onConsentPage) await onConsentPage(page);
                await clickAndWait(page, `form.decision button[name="decision"][value="${decision}"]`);
                continue;
            }
            if (here.origin === upstreamOrigin && here.pathname.startsWith('/interaction/')) {
                if ((await page.locator('input[name="login"]').count()) > 0) {
                    steps.push('upstream-login');
                    await page.fill('input[name="login"]', account.login);
                    await page.fill('input[name="password"]', account.password);
                    await clickAndWait(page, 'form button[type="submit"]');
                    continue;
                }
                if ((await page.locator('input[name="prompt"][value="consent"]').count()) > 0) {
                    steps.push('upstream-consent');
                    await clickAndWait(page, 'form button[type="submit"]');
                    continue;
                }
            }
            throw new Error(
                `unexpected page ${page.url()} (title "${await page.title()}"): ${await bodySnippet(page)}`
            );
        }
        throw new Error(`too many steps without reaching the client: ${steps.join(' > ')}`);
    } catch (e) {
        e.message = `${e.message} [browser steps: ${steps.join(' > ') || 'none'}; at ${page.url()}]`;
        throw e;
    } finally {
        await page.close().catch(() => {});
    }
}

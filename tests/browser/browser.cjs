// Real-browser checks in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Prints one JSON line with what it saw.
//   node browser.cjs speedscope FILE PROFILE_NAME FUNCTION
//       opens speedscope's offline page (dist/release/index.html of the npm
//       package), imports FILE through its file input, waits for the
//       profile's name, opens the Sandwich view and waits for FUNCTION.
//   node browser.cjs svg-search FILE TERM
//       opens a flame graph SVG and searches TERM with its Search button.
// NODE_PATH: the node_modules directory holding playwright-core and
// speedscope.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const TIMEOUT = 30000;

async function withPage(fn) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    timeout: TIMEOUT,
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('pageerror', e => problems.push('page error: ' + e.message));
    page.on('console', m => {
      if (m.type() === 'error' || /Failed to load format/.test(m.text())) {
        problems.push('console: ' + m.text());
      }
    });
    return await fn(page, problems);
  } finally {
    await browser.close();
  }
}

async function speedscope(file, profileName, fn) {
  const index = path.join(path.dirname(require.resolve('speedscope/package.json')),
                          'dist/release/index.html');
  return withPage(async (page, problems) => {
    page.on('dialog', d => { problems.push('dialog: ' + d.message()); d.dismiss(); });
    await page.goto('file://' + index);
    await page.setInputFiles('#file', file);
    const shows = text => page.waitForFunction(
      t => document.body.innerText.includes(t), text, { timeout: TIMEOUT });
    await shows(profileName);
    const toolbar = await page.locator('body').innerText();
    // The flame graphs are drawn on a canvas; the Sandwich view lists the
    // functions as text.
    await page.getByText('Sandwich').click();
    await shows(fn);
    const sandwich = await page.locator('body').innerText();
    const failed = /Something went wrong|Unrecognized format/.test(sandwich);
    return { toolbar, sandwich, failed, problems };
  });
}

async function svgSearch(file, term) {
  return withPage(async (page, problems) => {
    page.on('dialog', d => d.accept(term));
    await page.goto('file://' + path.resolve(file));
    await page.locator('#search').click();
    await page.waitForFunction(() => /Matched/.test(document.getElementById('matched').textContent));
    return await page.evaluate(() => {
      const matched = document.getElementById('matched').textContent;
      // Frames the search colored, by their function's name.
      const hits = [];
      for (const g of document.getElementById('frames').children) {
        const rect = g.querySelector('rect');
        const title = g.querySelector('title');
        if (rect && title && rect.getAttribute('fill') === searchcolor) {
          hits.push(title.textContent.replace(/ \(.*$/, ''));
        }
      }
      return { matched, hits };
    }).then(r => Object.assign(r, { problems }));
  });
}

(async () => {
  const [mode, ...args] = process.argv.slice(2);
  let result;
  if (mode === 'speedscope') result = await speedscope(args[0], args[1], args[2]);
  else if (mode === 'svg-search') result = await svgSearch(args[0], args[1]);
  else throw new Error('unknown mode ' + mode);
  console.log(JSON.stringify(result));
})().catch(e => { console.error(e && e.stack || e); process.exit(1); });

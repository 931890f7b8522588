// E2B's JavaScript SDK, unmodified, against a Sandcastle server: the scenario of
// tests/e2e/test_e2b_js_sdk.py. It reads E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY like any
// E2B user's program, asserts as it goes, and prints one JSON line per step it passed.
// SCENARIO_PAUSE=1 adds pause and resume (backends that save memory).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Sandbox, CommandExitError } from '@e2b/code-interpreter'

const passed = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }))

async function eventually(check, seconds = 10) {
  const end = Date.now() + seconds * 1000
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`still not true after ${seconds} s: ${check}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { scenario: 'js' }, envs: { GREETING: 'hello' } })
try {
  // Code: state persists in the default context, errors are results, charts are PNGs.
  let run = await sbx.runCode('x = 41\nx + 1')
  assert.equal(run.text, '42')
  run = await sbx.runCode('import os\nprint(x, os.environ["GREETING"])')
  assert.deepEqual(run.logs.stdout, ['41 hello\n'])
  run = await sbx.runCode('1 / 0')
  assert.equal(run.error.name, 'ZeroDivisionError')
  run = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
  assert.ok(run.results.some((r) => r.png && Buffer.from(r.png, 'base64').subarray(1, 4).toString() === 'PNG'))
  const js = await sbx.createCodeContext({ language: 'js' })
  run = await sbx.runCode('const a = 6; a * 7', { context: js })
  assert.equal(run.text, '42')
  run = await sbx.runCode('const b: number = 5; b + 1', { language: 'ts' })
  assert.equal(run.text, '6')
  const streamed = []
  await sbx.runCode('for i in range(3): print(i)', { onStdout: (m) => streamed.push(m.line) })
  assert.equal(streamed.join(''), '0\n1\n2\n')
  passed('code')

  // Files: text, 1 MiB of binary, list, exists, rename, remove, directories.
  await sbx.files.write('/home/user/notes.txt', 'some notes')
  assert.equal(await sbx.files.read('/home/user/notes.txt'), 'some notes')
  const blob = randomBytes(1 << 20)
  await sbx.files.write('blob.bin', blob)
  const back = await sbx.files.read('blob.bin', { format: 'bytes' })
  assert.ok(Buffer.from(back).equals(blob))
  const names = (await sbx.files.list('/home/user')).map((e) => e.name)
  assert.ok(names.includes('notes.txt') && names.includes('blob.bin'))
  assert.equal(await sbx.files.exists('/home/user/notes.txt'), true)
  assert.equal(await sbx.files.exists('/home/user/missing.txt'), false)
  await sbx.files.rename('/home/user/notes.txt', '/home/user/renamed.txt')
  assert.equal(await sbx.files.exists('/home/user/notes.txt'), false)
  await sbx.files.remove('/home/user/renamed.txt')
  assert.equal(await sbx.files.exists('/home/user/renamed.txt'), false)
  assert.equal(await sbx.files.makeDir('/home/user/made'), true)
  assert.equal(await sbx.files.makeDir('/home/user/made'), false)
  const seen = []
  const watcher = await sbx.files.watchDir('/home/user/made', (e) => seen.push(e))
  await sbx.files.write('/home/user/made/new.txt', 'x')
  await eventually(async () => seen.some((e) => e.name === 'new.txt' && e.type === 'create'))
  await watcher.stop()
  passed('files')

  // Commands: output, callbacks, exit codes, cwd, background + kill.
  let result = await sbx.commands.run('echo out; echo err >&2')
  assert.equal(result.stdout, 'out\n')
  assert.equal(result.stderr, 'err\n')
  assert.equal(result.exitCode, 0)
  const lines = []
  await sbx.commands.run('for i in 1 2 3; do echo $i; done', { onStdout: (l) => lines.push(l) })
  assert.equal(lines.join(''), '1\n2\n3\n')
  await assert.rejects(sbx.commands.run('exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3)
  result = await sbx.commands.run('pwd', { cwd: '/tmp' })
  assert.equal(result.stdout, '/tmp\n')
  const bg = await sbx.commands.run('sleep 600', { background: true })
  assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid))
  assert.equal(await bg.kill(), true)
  // The signal is sent; the process is gone once the sandbox has reaped it.
  await eventually(async () => !(await sbx.commands.list()).some((p) => p.pid === bg.pid))
  passed('commands')

  // Control plane: timeout, info, list, connect.
  await sbx.setTimeout(600_000)
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.state, 'running')
  assert.equal(info.metadata.scenario, 'js')
  const listed = await Sandbox.list({ query: { metadata: { scenario: 'js' } } }).nextItems()
  assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId))
  const again = await Sandbox.connect(sbx.sandboxId)
  assert.equal((await again.runCode('x')).text, '41')
  passed('control')

  if (process.env.SCENARIO_PAUSE === '1') {
    assert.equal(await sbx.pause(), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    const resumed = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await resumed.runCode('x')).text, '41')
    assert.equal((await resumed.getInfo()).state, 'running')
    passed('pause')
  }
} finally {
  await sbx.kill()
}
assert.equal(await sbx.isRunning(), false)
passed('kill')

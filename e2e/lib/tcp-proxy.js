// A TCP proxy on 127.0.0.1 that a test can break, for what a node sees of a
// service (Redis) that goes away and comes back:
//  - `refuse()`: every connection through it is cut and new ones are refused
//    (the service is down);
//  - `pause()`: connections stay open and new ones are accepted, but nothing
//    is forwarded either way (a silent network: what was sent arrives later,
//    as TCP delivers it once a partition heals);
//  - `restore()`: forwarding again (what a pause held is delivered first).

import net from 'node:net'

export class TcpProxy {
  /** @param {{ host: string, port: number }} target */
  constructor (target) {
    this.target = target
    this.state = 'open'
    this.server = null
    this.port = 0
    /** live pairs: { client, upstream, held: { up: Buffer[], down: Buffer[] } } */
    this.pairs = new Set()
    /** bytes forwarded: `up` to the target, `down` from it */
    this.bytes = { up: 0, down: 0 }
  }

  /** Listen on `port` (0: a free one); resolves to the port. */
  async listen (port = this.port) {
    this.server = net.createServer((client) => this.accept(client))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    return this.port
  }

  accept (client) {
    const upstream = net.connect(this.target.port, this.target.host)
    const pair = { client, upstream, held: { up: [], down: [] } }
    this.pairs.add(pair)
    const forward = (from, to, held, way) => {
      from.on('data', (chunk) => {
        if (this.state === 'paused') {
          held.push(chunk)
        } else {
          this.bytes[way] += chunk.length
          to.write(chunk)
        }
      })
    }
    forward(client, upstream, pair.held.up, 'up')
    forward(upstream, client, pair.held.down, 'down')
    const end = () => {
      this.pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    for (const s of [client, upstream]) {
      s.on('error', end)
      s.on('close', end)
    }
  }

  /** The service is down: cut every connection, refuse new ones. */
  async refuse () {
    this.state = 'refused'
    for (const { client, upstream } of this.pairs) { client.destroy(); upstream.destroy() }
    this.pairs.clear()
    if (this.server) {
      const server = this.server
      this.server = null
      await new Promise((resolve) => server.close(resolve))
    }
  }

  /** Silence: keep every connection, forward nothing. */
  pause () {
    this.state = 'paused'
  }

  /** Forward again; listen again (on the same port) after `refuse()`. */
  async restore () {
    const was = this.state
    this.state = 'open'
    if (was === 'refused' || !this.server) await this.listen(this.port)
    for (const pair of this.pairs) {
      for (const chunk of pair.held.up.splice(0)) { this.bytes.up += chunk.length; pair.upstream.write(chunk) }
      for (const chunk of pair.held.down.splice(0)) { this.bytes.down += chunk.length; pair.client.write(chunk) }
    }
  }

  async close () {
    await this.refuse()
  }
}

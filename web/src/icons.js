// Stroke icons on a 20×20 grid, drawn for Tandem (currentColor, 1.75 px).

const svg = (body, extra = '') => `<svg viewBox="0 0 20 20" width="18" height="18" fill="none" stroke="currentColor" stroke-width="1.75" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"${extra}>${body}</svg>`

export const icons = {
  bold: svg('<path d="M6.5 4h5a3 3 0 0 1 0 6h-5zM6.5 10h6a3 3 0 0 1 0 6h-6z" stroke-width="2.1"/>'),
  italic: svg('<path d="M9 4h6M5 16h6M12.5 4l-5 12"/>'),
  strike: svg('<path d="M3.5 10h13M13.6 6.4C13.1 5 11.8 4 10 4 7.9 4 6.5 5.2 6.5 6.8c0 .9.4 1.6 1.2 2.1M7 13.6c.5 1.5 1.9 2.4 3.6 2.4 2.1 0 3.4-1.1 3.4-2.7 0-.6-.2-1.1-.5-1.5"/>'),
  code: svg('<path d="M7 5.5 2.5 10 7 14.5M13 5.5l4.5 4.5-4.5 4.5"/>'),
  bulletList: svg('<path d="M8 5.5h9M8 10h9M8 14.5h9"/><circle cx="4" cy="5.5" r=".9" fill="currentColor"/><circle cx="4" cy="10" r=".9" fill="currentColor"/><circle cx="4" cy="14.5" r=".9" fill="currentColor"/>'),
  orderedList: svg('<path d="M9 5.5h8M9 10h8M9 14.5h8M3.5 4.2l1-.7v4M3.3 12.3c.2-.5.7-.8 1.2-.8.7 0 1.2.4 1.2 1 0 .8-2.4 1.8-2.4 3h2.5" stroke-width="1.4"/>'),
  quote: svg('<path d="M4 4.5v11M8.5 6.5h8M8.5 10h8M8.5 13.5h5"/>'),
  codeBlock: svg('<rect x="2.75" y="3.75" width="14.5" height="12.5" rx="2.25"/><path d="M8.2 8 6.2 10l2 2M11.8 8l2 2-2 2"/>'),
  link: svg('<path d="M8.6 11.4a3.2 3.2 0 0 0 4.5 0l2.5-2.5a3.2 3.2 0 0 0-4.5-4.5l-.8.8M11.4 8.6a3.2 3.2 0 0 0-4.5 0l-2.5 2.5a3.2 3.2 0 0 0 4.5 4.5l.8-.8"/>'),
  undo: svg('<path d="M4 4.5v4h4"/><path d="M4.3 8.5A6.3 6.3 0 1 1 5.8 15"/>'),
  redo: svg('<path d="M16 4.5v4h-4"/><path d="M15.7 8.5A6.3 6.3 0 1 0 14.2 15"/>'),
  share: svg('<path d="M10 12.5V3M6.75 6.25 10 3l3.25 3.25M5 10.5v4.75c0 .97.78 1.75 1.75 1.75h6.5c.97 0 1.75-.78 1.75-1.75V10.5"/>'),
  doc: svg('<path d="M11.5 2.75H6.25c-.97 0-1.75.78-1.75 1.75v11c0 .97.78 1.75 1.75 1.75h7.5c.97 0 1.75-.78 1.75-1.75V6.75z"/><path d="M11.5 2.75v4h4M7.5 10.5h5M7.5 13.5h3.5"/>'),
  plus: svg('<path d="M10 4.5v11M4.5 10h11"/>'),
  lock: svg('<rect x="4.25" y="8.75" width="11.5" height="8.5" rx="2"/><path d="M7 8.75V6.5a3 3 0 0 1 6 0v2.25"/>', ' width="14" height="14"'),
  check: svg('<path d="m4.5 10.5 3.5 3.5 7.5-8"/>'),
  arrowLeft: svg('<path d="M16 10H4M8.5 5.5 4 10l4.5 4.5"/>'),
  history: svg('<path d="M3.5 4.5v3.75h3.75"/><path d="M3.9 8.25A6.5 6.5 0 1 1 3.75 12"/><path d="M10 6.5V10l2.5 1.75"/>'),
  close: svg('<path d="m5 5 10 10M15 5 5 15"/>'),
  key: svg('<circle cx="6.5" cy="13.5" r="3"/><path d="m8.6 11.4 7-7M13.5 6.5l2 2M11.6 8.4l1.4 1.4"/>')
}

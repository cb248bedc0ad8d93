// swarmhub: a cell run while the notebook's kernel is still starting waits for the kernel
// instead of being dropped.
//
// JupyterLab (4.6.6 here) shows the kernel's name in the toolbar as soon as it asks the
// server for a session (SessionContext keeps a "pending kernel name"), but the session, and
// so its kernel, exists in the page only once POST /api/sessions (and the PATCH that names
// it) have answered. A code cell run in between reaches CodeCell.execute, which finds no
// `sessionContext.session.kernel`, clears the cell and returns without a word: the cell
// stays `[ ]`, no output, no error (https://github.com/jupyterlab/jupyterlab/issues/8490).
// Once the session has its kernel, messages wait in the kernel connection until its
// websocket is open, so that window is the only one that loses a cell; a new student who
// runs the first cell as soon as the notebook opens falls into it on a busy node.
//
// This plugin takes the place of JupyterLab's own cell executor
// (@jupyterlab/notebook-extension:cell-executor, disabled in package.json): a code cell run
// while a kernel is coming shows `[*]` and waits for it, then JupyterLab's own runCell does
// everything else exactly as it did.
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';

// A kernel start on a busy node: a few seconds, rarely tens. After this the cell goes to
// JupyterLab's runCell anyway, which clears it as before.
const KERNEL_WAIT_MS = 120000;

/**
 * A kernel was chosen (its name is in the toolbar) but the page has no kernel yet.
 * "No Kernel", a kernel shutting down and a closed notebook are left to JupyterLab.
 */
function kernelIsComing(sessionContext) {
  return (
    !sessionContext.isDisposed &&
    !sessionContext.isTerminating &&
    !sessionContext.hasNoKernel &&
    !sessionContext.session?.kernel
  );
}

/** Resolves at the session context's next change (or after `ms`). */
function nextChange(sessionContext, ms) {
  const signals = [
    sessionContext.sessionChanged,
    sessionContext.kernelChanged,
    sessionContext.statusChanged,
    sessionContext.disposed
  ];
  return new Promise(resolve => {
    const done = () => {
      clearTimeout(timer);
      signals.forEach(signal => signal.disconnect(done));
      resolve();
    };
    const timer = setTimeout(done, ms);
    signals.forEach(signal => signal.connect(done));
  });
}

/** Waits until the kernel is there (or is no longer coming, or KERNEL_WAIT_MS). */
async function waitForKernel(sessionContext) {
  const deadline = Date.now() + KERNEL_WAIT_MS;
  while (kernelIsComing(sessionContext) && Date.now() < deadline) {
    await nextChange(sessionContext, deadline - Date.now());
  }
}

async function runCellOnceKernelIsUp(options) {
  const { cell, sessionContext } = options;
  if (cell.model.type === 'code' && sessionContext && kernelIsComing(sessionContext)) {
    cell.model.executionState = 'running'; // the prompt shows [*]: the cell is queued
    await waitForKernel(sessionContext);
    if (cell.isDisposed) {
      return false;
    }
    cell.model.executionState = 'idle';
  }
  return runCell(options);
}

const plugin = {
  id: 'swarmhub-wait-for-kernel:cell-executor',
  description: "Runs a notebook's cells, waiting for a kernel that is still starting.",
  autoStart: true,
  provides: INotebookCellExecutor,
  activate: () => Object.freeze({ runCell: runCellOnceKernelIsUp })
};

export default plugin;

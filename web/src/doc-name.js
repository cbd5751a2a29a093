// What a document name may be (the server's DocName): its own module so that
// the start page can check a name without loading the editor.
export const DOC_NAME = /^[A-Za-z0-9\-_.~:@]{1,255}$/

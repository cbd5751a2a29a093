var o=/^[A-Za-z0-9\-_.~:@]{1,255}$/;export{o as a};
